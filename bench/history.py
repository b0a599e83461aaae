"""Scenario 6: every hot path on a year of history beside the same on an empty database.

Two PostgreSQL databases in one run: a small one (`small` finished requests, so both sides
have warm plans and caches: on a truly empty one the ratios measured an empty table's plans
rather than the history's cost) and one holding `requests` finished requests with `attempts`
calls each (bench/history_seed.py; built once and kept as a template between runs,
bench/history_cache.py). Both then get the same live load:
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
from functools import partial
from typing import Any

import httpx

from bench import api_load, history_cache, history_seed, throughput
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
    small: int = 12_000  # the finished requests of the "empty" side
    attempts: int = 2
    users: int = 20
    lanes: int = 1000
    prune_rows: int = 1_000_000
    samples: int = 30
    rounds: int = 5  # of the cheap figures (`spdist lanes`, a reconciler pass); best taken
    api_rounds: int = 2  # of the enqueue load; medians taken
    api: api_load.ApiSize = field(default_factory=lambda: api_load.ApiSize(seconds=4.0))
    dispatch: throughput.ThroughputSize = field(
        default_factory=lambda: throughput.ThroughputSize(requests=2500, nodes=1, window_s=12.0)
    )


def _timed(fn: Any) -> float:
    """Seconds one run of `fn` took."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _lanes_command(ctx: Any) -> None:
    from worker import views

    with ctx.sessions() as session:
        json.dumps([lane.as_dict() for lane in views.lanes(ctx, session)])


def _reconcile(ctx: Any) -> None:
    from worker.reconcile import reconcile

    reconcile(ctx)


def _side_by_side(fns: dict[str, Any], rounds: int, pick: Any = min) -> dict[str, float]:
    """Each of `fns` timed `rounds` times, taking turns, so the machine's load (shared, and
    never still) weighs on both alike; `pick` of each one's times."""
    took: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            took[key].append(_timed(fn))
    return {k: pick(v) for k, v in took.items()}


def _get(http: httpx.Client, path: str) -> None:
    http.get(path).raise_for_status()


def _latencies_ms(
    https: dict[str, httpx.Client], paths: dict[str, list[str]], samples: int
) -> dict[str, float]:
    """Median milliseconds of GETs cycling through each one's `paths`, taking turns."""
    for key, http in https.items():
        for path in paths[key]:
            _get(http, path)  # warm-up
    out: dict[str, list[float]] = {k: [] for k in https}
    for i in range(samples):
        for key, http in https.items():
            path = paths[key][i % len(paths[key])]
            out[key].append(_timed(lambda h=http, p=path: _get(h, p)) * 1000)
    return {k: median(v) for k, v in out.items()}


SCRAPE_LOOPS = 8


def _beside_scrapes_ms(http: httpx.Client, base: str, paths: list[str], samples: int) -> float:
    """`_latencies_ms` of the list GETs while SCRAPE_LOOPS clients scrape /metrics back to
    back on the same API process."""
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=base, headers=http.headers, timeout=30) as scraper:
            while not stop.is_set():
                _get(scraper, "/metrics")

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(SCRAPE_LOOPS)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)  # every loop under way
        return _latencies_ms({base: http}, {base: paths}, samples)[base]
    finally:
        stop.set()
        for t in threads:
            t.join()


def _users(key: str, n: int, base: int) -> list[str]:
    """Users of their own for each database: the two share one Redis."""
    return user_ids(n, base=base + (0 if key == "empty" else 0x100000))


def _seed_live(ctx: Any, users: list[str]) -> None:
    """The live load both databases get: two waiting requests per lane, lanes steady."""
    rows = request_rows(dict.fromkeys(users, 2))
    insert_rows(ctx, rows)
    fill_lanes(ctx, rows)


def _serve(ws: Workspace, db: str, name: str, size: HistorySize) -> tuple[Any, str, list[str]]:
    load_users = _users(name, size.api.users, LOAD_BASE)
    env = env_for(
        db, ws, "http://127.0.0.1:9/pixelStripeApi", 1.0, keys={u: f"key-{u}" for u in load_users}
    )
    env["SPDIST_API_TOKENS"] = api_load.TOKEN
    proc, base = api_load._serve("api.main:app", env, ws, name)
    return proc, base, load_users


def _api_figures(
    ws: Workspace, dbs: dict[str, str], size: HistorySize
) -> dict[str, dict[str, Any]]:
    """An API process per database, up together; every figure taken in turns."""
    served = {k: _serve(ws, db, k, size) for k, db in dbs.items()}
    auth = {"Authorization": f"Bearer {api_load.TOKEN}"}
    history_user = f"{history_seed.HISTORY_USER_BASE:024x}"
    lists = [
        "/v1/distributions?limit=50",
        f"/v1/distributions?limit=50&userId={history_user}",
        "/v1/distributions?limit=50&state=queued",
        "/v1/distributions?limit=50&state=failed",
        f"/v1/distributions?limit=50&projectId={0xC7000000:024x}",
    ]
    out: dict[str, dict[str, Any]] = {k: {} for k in dbs}
    try:
        https = {
            k: httpx.Client(base_url=b, headers=auth, timeout=30) for k, (_, b, _) in served.items()
        }
        lanes = {k: [f"/v1/users/{u}/lane" for u in _users(k, 10, LANE_BASE)] for k in dbs}
        for figure, paths, n in (
            ("scrape_ms", dict.fromkeys(dbs, ["/metrics"]), max(5, size.samples // 3)),
            ("list_ms", dict.fromkeys(dbs, lists), size.samples),
            ("lane_ms", lanes, size.samples),
        ):
            for k, v in _latencies_ms(https, paths, n).items():
                out[k][figure] = v
        for k, (_, base, _) in served.items():
            out[k]["list_scraped_ms"] = _beside_scrapes_ms(https[k], base, lists, size.samples)
        for http in https.values():
            http.close()
        loads: dict[str, list[dict[str, Any]]] = {k: [] for k in dbs}
        for turn in range(size.api_rounds):  # ABBA: a drift of the machine weighs on both
            order = list(served.items())
            for k, (_, base, load_users) in order[:: -1 if turn % 2 else 1]:
                loads[k].append(api_load._load(base, load_users, size.api))
        for k, runs in loads.items():
            out[k]["enqueue"] = {
                **runs[-1],
                "rps": median([r["rps"] for r in runs]),
                "p99_ms": median([r["p99_ms"] for r in runs]),
            }
    finally:
        for proc, _, _ in served.values():
            proc.stop()
    return out


def _measure(
    ws: Workspace, size: HistorySize, sp_url: str, fake_pid: int, dbs: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Every figure on both databases, side by side."""
    from bench.reconciler import _steady_lanes

    reset_redis(ws.redis_url)
    ctxs = {k: make_ctx(db, ws.redis_url, 120.0) for k, db in dbs.items()}
    out: dict[str, dict[str, Any]] = {k: {} for k in dbs}
    try:
        for key, ctx in ctxs.items():
            users = _users(key, size.lanes, LANE_BASE)
            _seed_live(ctx, users)
            _steady_lanes(ctx, users, 120.0)
            ctx.send = lambda user, wake: None
        lanes = _side_by_side(
            {k: lambda c=c: _lanes_command(c) for k, c in ctxs.items()}, size.rounds
        )
        passes = _side_by_side({k: lambda c=c: _reconcile(c) for k, c in ctxs.items()}, size.rounds)
        for k in dbs:
            out[k].update(lanes_s=lanes[k], reconcile_s=passes[k])
    finally:
        for ctx in ctxs.values():
            close_ctx(ctx)
    for k, figures in _api_figures(ws, dbs, size).items():
        out[k].update(figures)
    for k, db in dbs.items():
        out[k]["dispatch"] = throughput.run_spdist(ws, size.dispatch, sp_url, db, fake_pid)
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


def _build(db: str, requests: int, size: HistorySize) -> None:
    """`requests` of history, then a CHECKPOINT: its writes are flushed before any figure."""
    from sqlalchemy import text

    from worker.db import make_engine

    engine = make_engine(db)
    try:
        history_seed.build(engine, requests, size.attempts, size.users)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("CHECKPOINT"))
    finally:
        engine.dispose()


def run(ws: Workspace, size: HistorySize) -> dict[str, Any]:
    """The history copied from its cache (built first when missing), the small database
    built, both measured side by side, then the prune beside dispatch; one fake server."""
    fake, sp_url = start_fake(ws.logs("history"), interval_s=1.0)
    build = partial(_build, requests=size.requests, size=size)
    try:
        with (
            history_cache.history_db(size.requests, size.attempts, size.users, build) as made,
            postgres_db() as small_db,
        ):
            full_db, ready_s, cached = made
            _build(small_db, size.small, size)
            both = _measure(ws, size, sp_url, fake.pid, {"empty": small_db, "history": full_db})
            pruned = _prune_beside_dispatch(ws, size, sp_url, fake.pid, full_db)
    finally:
        fake.stop()
    both["history"].update(build_s=ready_s, cached=cached)
    return {"size": size, **both, "prune": pruned}
