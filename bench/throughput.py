"""Scenario 2: one request each for many users, the fake answering at once; spdist against a
bare Celery task that makes only the same POST, on the same broker and the same workers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.common import (
    Workspace,
    calls,
    close_ctx,
    count_executions,
    env_for,
    fill_lanes,
    hex24,
    insert_rows,
    kick_lanes,
    make_ctx,
    request_rows,
    reset_fake,
    start_nodes,
    steady_rate,
    stop_all,
    user_ids,
    wait_calls,
)
from bench.fake import start as start_fake
from bench.infra import postgres_db, reset_redis, sqlite_db, write_keys_file
from worker.dev.cpu import measure
from worker.dev.procs import Proc, start_beat


@dataclass(frozen=True)
class ThroughputSize:
    requests: int = 5000
    nodes: int = 2
    concurrency: int = 2
    timeout_s: float = 150.0
    # spdist's rate is read over at most this many seconds of calls: a full drain of 5,000
    # at today's rate would not fit `make bench`'s five minutes (the doc says so).
    window_s: float = 35.0


def _result(got: list[dict[str, Any]], executions: int, seeded_s: float) -> dict[str, Any]:
    times = [c["wall"] for c in got]
    return {
        "calls": len(got),
        "ok": sum(1 for c in got if c["status"] == 200),
        "rate": steady_rate(times),
        "span_s": max(times) - min(times),
        "executions_per_dispatch": executions / len(got) if got else float("nan"),
        "seed_s": seeded_s,
    }


def run_baseline(
    ws: Workspace, size: ThroughputSize, sp_url: str, settings: str, fake_pid: int
) -> dict[str, Any]:
    """Messages first, then the workers: the rate is the workers', not the publisher's.
    settings "spdist": the workers run with spdist's worker settings (bench/baselines.py);
    "spdist-plumbing": and spdist's broker transport and consumer; "celery": with Celery's
    defaults."""
    from bench.baselines import celery_app

    reset_redis(ws.redis_url)
    reset_fake(sp_url)
    celery_app.conf.broker_url = ws.redis_url
    t0 = time.monotonic()
    with celery_app.producer_or_acquire() as producer:
        for i, user in enumerate(user_ids(size.requests)):
            celery_app.send_task(
                "bench.post",
                args=[user, hex24(0xC0000 + i), hex24(0xD0000 + i)],
                queue="bench",
                producer=producer,
            )
    seeded = time.monotonic() - t0
    env = env_for("sqlite://", ws, sp_url, 1.0)
    env.update(BENCH_BROKER_URL=ws.redis_url, BENCH_SP_URL=sp_url, BENCH_WORKER_SETTINGS=settings)
    logs = ws.logs(f"tp-bare-{settings}")
    procs = start_nodes("bare", size.nodes, size.concurrency, env, logs, "b")
    try:
        since = time.time()
        with measure({p.pid for p in procs}, None, ws.redis_url, fake_pid) as used:
            got = wait_calls(sp_url, size.requests, size.timeout_s, every=1.0)
        time.sleep(0.5)
        executions = count_executions(procs, "bench.post")
    finally:
        stop_all(procs)
    return {**_result(got, executions, seeded), "cpu": cpu_per_call(used, got, since)}


def run_spdist(
    ws: Workspace, size: ThroughputSize, sp_url: str, db: str, fake_pid: int
) -> dict[str, Any]:
    """Requests stored and their lanes woken first (as enqueue leaves them), then the workers."""
    reset_redis(ws.redis_url)
    reset_fake(sp_url)
    users = user_ids(size.requests)
    keys_file = write_keys_file(ws.folder, users)
    ctx = make_ctx(db, ws.redis_url, 1.0, keys_file=keys_file)
    t0 = time.monotonic()
    rows = request_rows(dict.fromkeys(users, 1))
    insert_rows(ctx, rows)
    fill_lanes(ctx, rows)
    kick_lanes(ctx, users)
    seeded = time.monotonic() - t0
    env = env_for(db, ws, sp_url, 1.0, keys_file=keys_file)
    name = "tp-sqlite" if db.startswith("sqlite") else "tp-postgres"
    beat = start_beat(env, ws.logs(name))  # first: its start-up is not a dispatch's cost
    procs: list[Proc] = []
    try:
        procs = start_nodes("spdist", size.nodes, size.concurrency, env, ws.logs(name), "w")
        since = time.time()
        with measure({p.pid for p in procs}, beat.pid, ws.redis_url, fake_pid) as used:
            got = _calls_within(sp_url, size)
        executions = count_executions([*procs, beat], "spdist.dispatch")
    finally:
        stop_all([*procs, beat])
        close_ctx(ctx)
    return {**_result(got, executions, seeded), "cpu": cpu_per_call(used, got, since)}


def cpu_per_call(used: dict[str, float], got: list[dict[str, Any]], since: float) -> dict[str, Any]:
    """Machine CPU per call made while the meter ran, in ms, by part and in all."""
    n = sum(1 for c in got if c["wall"] >= since)
    ms = {part: 1000 * seconds / n for part, seconds in used.items()} if n else {}
    return {"calls": n, "ms": ms, "total_ms": sum(ms.values())}


def _calls_within(sp_url: str, size: ThroughputSize) -> list[dict[str, Any]]:
    """Every call, or those of the first `window_s` seconds after the first one."""
    deadline = time.monotonic() + size.timeout_s
    first: float | None = None
    while True:
        got = calls(sp_url)
        if got and first is None:
            first = time.monotonic()
        if len(got) >= size.requests:
            time.sleep(0.5)
            return got
        if first is not None and time.monotonic() - first > size.window_s:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(got)} of {size.requests} calls")
        time.sleep(1.0)


def run(ws: Workspace, size: ThroughputSize) -> dict[str, Any]:
    """The bare task on spdist's worker settings (the baseline), on those with spdist's Celery
    plumbing (broker transport, event batching), and on Celery's defaults, then spdist on
    Postgres, then on SQLite, against one fake server."""
    fake, sp_url = start_fake(ws.logs("throughput"), interval_s=1.0)
    try:
        baseline = run_baseline(ws, size, sp_url, "spdist", fake.pid)
        plumbing = run_baseline(ws, size, sp_url, "spdist-plumbing", fake.pid)
        defaults = run_baseline(ws, size, sp_url, "celery", fake.pid)
        with postgres_db() as db:
            postgres = run_spdist(ws, size, sp_url, db, fake.pid)
        sqlite = run_spdist(ws, size, sp_url, sqlite_db(ws.folder, "throughput.db"), fake.pid)
    finally:
        fake.stop()
    return {
        "size": size,
        "baseline": baseline,
        "baseline_spdist_plumbing": plumbing,
        "baseline_celery_defaults": defaults,
        "postgres": postgres,
        "sqlite": sqlite,
    }
