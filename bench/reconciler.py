"""Scenario 5: one reconciler pass over a large backlog on Postgres, lanes in steady state."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.common import (
    Workspace,
    close_ctx,
    fill_lanes,
    insert_rows,
    make_ctx,
    request_rows,
    user_ids,
)
from bench.infra import postgres_db, reset_redis


@dataclass(frozen=True)
class ReconcilerSize:
    requests: int = 100_000
    lanes: int = 10_000
    interval_s: float = 120.0
    passes: int = 3


def _steady_lanes(ctx: Any, users: list[str], interval_s: float) -> None:
    """Every lane as a busy system leaves it: its next slot ahead, a message in flight."""
    from worker.pacer import keys

    now_us = ctx.pacer.now_us()
    pipe = ctx.pacer.redis.pipeline(transaction=False)
    for i, user in enumerate(users, 1):
        pipe.hset(
            keys.lane_state(user),
            mapping={"next_free": now_us + int(interval_s * 5e5), "last_fire": now_us},
        )
        pipe.pexpire(keys.lane_state(user), 3_600_000)
        pipe.eval(
            "local h=redis.call('ZRANGE',KEYS[1],0,0)[1] "
            "if h then redis.call('SET',KEYS[2],h,'PX',ARGV[1]) end",
            2,
            keys.lane_queue(user),
            keys.lane_wake(user),
            300_000,
        )
        if i % 2000 == 0:
            pipe.execute()
    pipe.execute()


def run(ws: Workspace, size: ReconcilerSize, profile: bool = False) -> dict[str, Any]:
    """Seed SQL with COPY and Redis with a pipeline, then time whole passes."""
    from worker.reconcile import reconcile

    reset_redis(ws.redis_url)
    users = user_ids(size.lanes, base=0xB6000000)
    with postgres_db() as db:
        ctx = make_ctx(db, ws.redis_url, size.interval_s)
        published: list[str] = []
        ctx.send = lambda user, wake: published.append(user)
        try:
            rows = request_rows(dict.fromkeys(users, size.requests // size.lanes))
            t0 = time.monotonic()
            insert_rows(ctx, rows)
            fill_lanes(ctx, rows)
            _steady_lanes(ctx, users, size.interval_s)
            seed_s = time.monotonic() - t0
            with ctx.sessions() as s:  # a warm connection, as beat's worker has
                s.connection()
            passes, counts = [], {}
            for _ in range(size.passes):
                t = time.perf_counter()
                counts = reconcile(ctx)
                passes.append(time.perf_counter() - t)
            text = _profile(ctx) if profile else None
        finally:
            close_ctx(ctx)
    return {
        "size": size,
        "passes_s": passes,
        "first_s": passes[0],
        "best_s": min(passes),
        "counts": counts,
        "published": len(published),
        "seed_s": seed_s,
        "profile": text,
    }


def _profile(ctx: Any) -> str | None:
    try:
        from pyinstrument import Profiler
    except ImportError:
        return None
    from worker.reconcile import reconcile

    with Profiler(interval=0.001) as prof:
        reconcile(ctx)
    return str(prof.output_text(unicode=False, color=False, show_all=False))
