"""Scenario 6: every hot path on a year of history beside the same on an empty database.

Two PostgreSQL databases in one run: one empty, one holding `requests` finished requests
with `attempts` calls each (bench/history_seed.py). Both then get the same live load:
`lanes` lanes of two waiting requests. On each: `spdist lanes` (its work in this process:
the read, the JSON), one reconciler pass, an API process (one `/metrics` scrape, the list
and lane routes, the enqueue load of scenario 3), then dispatch throughput (scenario 2's
spdist run). On the history database last, a prune of about `prune_rows` rows while the
same dispatch runs again beside it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

from bench import api_load, history_seed, throughput
from bench.common import (
    Workspace,
    calls,
    close_ctx,
    env_for,
    fill_lanes,
    insert_rows,
    make_ctx,
    median,
    request_rows,
    steady_rate,
    user_ids,
)
from bench.fake import start as start_fake
from bench.infra import postgres_db, reset_redis

LANE_BASE = 0xB8000000
LOAD_BASE = 0xA1800000


@dataclass(frozen=True)
class HistorySize:
    requests: int = 2_000_000
    attempts: int = 2
    users: int = 20
    lanes: int = 1000
    prune_rows: int = 1_000_000
    samples: int = 30
    api: api_load.ApiSize = field(default_factory=lambda: api_load.ApiSize(seconds=4.0))
    dispatch: throughput.ThroughputSize = field(
        default_factory=lambda: throughput.ThroughputSize(requests=2500, nodes=1, window_s=12.0)
    )


def _timed(fn: Any, repeat: int = 1) -> float:
    """The best of `repeat` runs of `fn`, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _lanes_command(ctx: Any) -> None:
    from worker import views

    with ctx.sessions() as session:
        json.dumps([lane.as_dict() for lane in views.lanes(ctx, session)])


def _reconcile_pass(ctx: Any) -> float:
    from worker.reconcile import reconcile

    ctx.publish = lambda user, wake: None
    return _timed(lambda: reconcile(ctx))


def _latency_ms(http: httpx.Client, paths: list[str], samples: int) -> float:
    """Median milliseconds of GETs cycling through `paths` (one warm-up each first)."""
    for path in paths:
        http.get(path).raise_for_status()
    took = []
    for i in range(samples):
        t = time.perf_counter()
        http.get(paths[i % len(paths)]).raise_for_status()
        took.append((time.perf_counter() - t) * 1000)
    return median(took)


def _api_figures(ws: Workspace, db: str, size: HistorySize, users: list[str]) -> dict[str, Any]:
    load_users = user_ids(size.api.users, base=LOAD_BASE)
    keys = {u: f"key-{u}" for u in load_users}
    env = env_for(db, ws, "http://127.0.0.1:9/pixelStripeApi", 1.0, keys=keys)
    env["SPDIST_API_TOKENS"] = api_load.TOKEN
    proc, base = api_load._serve("api.main:app", env, ws, "api-history")
    auth = {"Authorization": f"Bearer {api_load.TOKEN}"}
    history_user = f"{history_seed.HISTORY_USER_BASE:024x}"
    lists = [
        "/v1/distributions?limit=50",
        f"/v1/distributions?limit=50&userId={history_user}",
        "/v1/distributions?limit=50&state=queued",
        "/v1/distributions?limit=50&state=failed",
        f"/v1/distributions?limit=50&projectId={0xC7000000:024x}",
    ]
    try:
        with httpx.Client(base_url=base, headers=auth, timeout=30) as http:
            out = {
                "scrape_ms": _latency_ms(http, ["/metrics"], max(5, size.samples // 3)),
                "list_ms": _latency_ms(http, lists, size.samples),
                "lane_ms": _latency_ms(
                    http, [f"/v1/users/{u}/lane" for u in users[:10]], size.samples
                ),
            }
        out["enqueue"] = api_load._load(base, load_users, size.api)
    finally:
        proc.stop()
    return out


def _measure(
    ws: Workspace, size: HistorySize, sp_url: str, fake_pid: int, db: str, history: bool
) -> dict[str, Any]:
    """Every figure on one database; with `history`, the history is built first."""
    reset_redis(ws.redis_url)
    users = user_ids(size.lanes, base=LANE_BASE)
    ctx = make_ctx(db, ws.redis_url, 120.0)
    out: dict[str, Any] = {}
    try:
        if history:
            t = time.monotonic()
            history_seed.build(ctx.sessions.kw["bind"], size.requests, size.attempts, size.users)
            out["build_s"] = time.monotonic() - t
        rows = request_rows(dict.fromkeys(users, 2))
        insert_rows(ctx, rows)
        fill_lanes(ctx, rows)
        out["lanes_s"] = _timed(lambda: _lanes_command(ctx), repeat=3)
        out["reconcile_s"] = _reconcile_pass(ctx)
    finally:
        close_ctx(ctx)
    out.update(_api_figures(ws, db, size, users))
    out["dispatch"] = throughput.run_spdist(ws, size.dispatch, sp_url, db, fake_pid)
    return out


def _prune_cutoff(size: HistorySize) -> Any:
    """The cutoff that lets about `prune_rows` rows of the history go (oldest first)."""
    from worker.models import utcnow

    share = size.prune_rows / (size.requests * (1 + size.attempts))
    span = timedelta(days=history_seed.DAYS)
    return utcnow() - timedelta(days=1) - span * (1 - share)


def _prune_beside_dispatch(
    ws: Workspace, size: HistorySize, sp_url: str, fake_pid: int, db: str
) -> dict[str, Any]:
    """The prune in a thread of its own, the dispatch run of `_measure` beside it."""
    from worker import retention

    ctx = make_ctx(db, ws.redis_url, 120.0)
    done: dict[str, Any] = {}

    def prune() -> None:
        done["start"] = time.time()
        with ctx.sessions() as session:
            done["rows"] = retention.prune(session, _prune_cutoff(size)).rows
        done["end"] = time.time()

    worker = threading.Thread(target=prune)
    worker.start()
    try:
        dispatch = throughput.run_spdist(ws, size.dispatch, sp_url, db, fake_pid)
        end = done.get("end", float("inf"))
        beside = [c["wall"] for c in calls(sp_url) if done["start"] <= c["wall"] <= end]
        worker.join()
    finally:
        close_ctx(ctx)
    return {
        "rows": done["rows"],
        "seconds": done["end"] - done["start"],
        "dispatch_rate": steady_rate(beside) if len(beside) > 1 else float("nan"),
        "dispatch_calls": len(beside),
        "dispatch_all": dispatch,
    }


def run(ws: Workspace, size: HistorySize) -> dict[str, Any]:
    """Empty first, then the history, then the prune beside dispatch; one fake server."""
    fake, sp_url = start_fake(ws.logs("history"), interval_s=1.0)
    try:
        with postgres_db() as db:
            empty = _measure(ws, size, sp_url, fake.pid, db, history=False)
        with postgres_db() as db:
            full = _measure(ws, size, sp_url, fake.pid, db, history=True)
            pruned = _prune_beside_dispatch(ws, size, sp_url, fake.pid, db)
    finally:
        fake.stop()
    return {"size": size, "empty": empty, "history": full, "prune": pruned}
