"""Scenario 4: a worker's resident memory, idle and with a backlog waiting in many lanes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.common import (
    Workspace,
    close_ctx,
    env_for,
    fill_lanes,
    insert_rows,
    kick_lanes,
    make_ctx,
    request_rows,
    reset_fake,
    start_nodes,
    stop_all,
    user_ids,
    wait_calls,
)
from bench.fake import start as start_fake
from bench.infra import postgres_db, reset_redis, rss_mb, write_keys_file
from worker.dev.procs import start_beat


@dataclass(frozen=True)
class MemorySize:
    requests: int = 10_000
    lanes: int = 100
    interval_s: float = 120.0  # production's: each lane's next head waits as an ETA message
    settle_s: float = 4.0


def _backlog(ctx: Any, users: list[str], per_lane: int) -> None:
    rows = request_rows(dict.fromkeys(users, per_lane))
    insert_rows(ctx, rows)
    fill_lanes(ctx, rows)
    kick_lanes(ctx, users)


def run(ws: Workspace, size: MemorySize) -> dict[str, Any]:
    """VmRSS of one worker (main process and pool), warm and idle, then with the backlog.

    "Idle" is after one call in every lane, so the pool has imported and connected all it
    needs; the backlog then arrives behind those calls and waits out the interval."""
    reset_redis(ws.redis_url)
    fake, sp_url = start_fake(ws.logs("memory"), interval_s=size.interval_s)
    users = user_ids(size.lanes, base=0xB5000000)
    keys_file = write_keys_file(ws.folder, users)
    try:
        with postgres_db() as db:
            reset_fake(sp_url)
            env = env_for(db, ws, sp_url, size.interval_s, keys_file=keys_file)
            procs = start_nodes("spdist", 1, 2, env, ws.logs("memory"), "m")
            procs.append(start_beat(env, ws.logs("memory")))
            ctx = make_ctx(db, ws.redis_url, size.interval_s, keys_file=keys_file)
            try:
                _backlog(ctx, users, 1)  # warm: every lane makes one call, nothing waits
                wait_calls(sp_url, size.lanes, 120)
                time.sleep(size.settle_s)  # a few reconciler passes too
                idle = rss_mb(procs[0].pid)
                _backlog(ctx, users, size.requests // size.lanes)  # now every lane waits
                time.sleep(size.settle_s)
                loaded = rss_mb(procs[0].pid)
                waiting = ctx.pacer.redis.eval(
                    "local n=0 for _,k in ipairs(redis.call('KEYS','spdist:lane:*:q')) do "
                    "n=n+redis.call('ZCARD',k) end return n",
                    0,
                )
            finally:
                stop_all(procs)
                close_ctx(ctx)
    finally:
        fake.stop()
    return {
        "size": size,
        "idle_mb": idle,
        "loaded_mb": loaded,
        "delta_mb": loaded - idle,
        "waiting": int(waiting),
    }
