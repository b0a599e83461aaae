"""Scenario 1: users × requests at a short interval, spdist against Celery's own rate_limit."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from bench.common import (
    Workspace,
    calls,
    close_ctx,
    count_executions,
    env_for,
    hex24,
    make_ctx,
    median,
    percentile,
    reset_fake,
    start_nodes,
    stop_all,
    user_ids,
    wait_calls,
)
from bench.fake import start as start_fake
from bench.infra import command_stats, postgres_db, reset_redis, stats_diff
from worker.dev.procs import start_beat, wait_for


@dataclass(frozen=True)
class PacingSize:
    users: int = 3
    per_user: int = 20
    projects: int = 8
    interval_s: float = 1.0
    nodes: int = 2
    concurrency: int = 2


def enqueue_index(upload_id: str) -> int:
    """A call's place in the enqueue order (`_plan` numbers the uploads)."""
    return int(upload_id, 16) - 0xF00000


def out_of_order(got: list[dict[str, Any]]) -> int:
    """Calls made before a request of the same user that was enqueued earlier."""
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in got:
        by_user[c["userId"]].append(c)
    count = 0
    for user_calls in by_user.values():
        order = [enqueue_index(c["uploadId"]) for c in sorted(user_calls, key=lambda c: c["mono"])]
        first = list(dict.fromkeys(order))  # a request's first call is its place
        count += sum(1 for i, n in enumerate(first) if any(m < n for m in first[i + 1 :]))
    return count


def pacing_metrics(got: list[dict[str, Any]], interval_s: float) -> dict[str, Any]:
    """Calls inside the interval, slack of each gap, total time against the ideal, and the
    share of requests called out of their enqueue order."""
    by_user: dict[str, list[float]] = defaultdict(list)
    for c in got:
        by_user[c["userId"]].append(c["mono"])
    slack, spans, ideals = [], [], []
    for times in by_user.values():
        times.sort()
        slack += [b - a - interval_s for a, b in itertools.pairwise(times)]
        spans.append(times[-1] - times[0])
        ideals.append((len(times) - 1) * interval_s)
    worst = max(range(len(spans)), key=lambda i: spans[i] / ideals[i] if ideals[i] else 0)
    return {
        "calls": len(got),
        "ok": sum(1 for c in got if c["status"] == 200),
        "inside": sum(1 for c in got if c["violation"]),
        "slack_median_ms": median(slack) * 1000,
        "slack_p99_ms": percentile(slack, 99) * 1000,
        "total_s": spans[worst],
        "ideal_s": ideals[worst],
        "total_over_ideal": spans[worst] / ideals[worst] if ideals[worst] else float("nan"),
        "out_of_order": out_of_order(got) / max(1, len({c["uploadId"] for c in got})),
    }


def _plan(size: PacingSize) -> list[tuple[str, str, str]]:
    """(user, project, upload) in arrival order: users interleaved, projects round-robin."""
    users = user_ids(size.users)
    return [
        (users[i % size.users], hex24(0xABC000 + i % size.projects), hex24(0xF00000 + i))
        for i in range(size.users * size.per_user)
    ]


def _timeout(size: PacingSize) -> float:
    return size.per_user * size.interval_s * 2 + 60


def run_spdist(
    ws: Workspace,
    size: PacingSize,
    sp_url: str,
    *,
    call_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    name: str = "pacing-spdist",
) -> dict[str, Any]:
    """spdist: real workers and beat on Postgres, the real enqueue path; the workers call
    `call_url` (a front of the fake) when given."""
    from worker import distributions

    reset_redis(ws.redis_url)
    reset_fake(sp_url)
    plan = _plan(size)
    keys = {u: f"key-{u}" for u in {p[0] for p in plan}}
    logs = ws.logs(name)
    with postgres_db() as db:
        env = env_for(db, ws, call_url or sp_url, size.interval_s, keys=keys)
        env.update(extra_env or {})
        procs = start_nodes("spdist", size.nodes, size.concurrency, env, logs, "w")
        procs.append(start_beat(env, logs))
        ctx = make_ctx(db, ws.redis_url, size.interval_s, keys=keys)
        try:
            before = command_stats(ws.redis_url)
            for user, project, upload in plan:
                new = distributions.validate(ctx, user, project, upload, coalesce=False)
                distributions.enqueue(ctx, new)
            wait_calls(sp_url, len(plan), _timeout(size))
            wait_for(lambda: _all_done(ctx), 30, "every request recorded")
            after = command_stats(ws.redis_url)
            time.sleep(0.5)  # let the last task's "succeeded" line reach the log
            executions = count_executions(procs, "spdist.dispatch")
        finally:
            stop_all(procs)
            close_ctx(ctx)
    got = calls(sp_url)
    return _summary(got, size, executions, stats_diff(before, after))


def _all_done(ctx: Any) -> bool:
    from sqlalchemy import func, select

    from worker.models import TERMINAL, DistributionRequest

    with ctx.sessions() as s:
        open_ = s.scalar(select(func.count()).where(DistributionRequest.state.not_in(TERMINAL)))
    return open_ == 0


def run_baseline(ws: Workspace, size: PacingSize, sp_url: str) -> dict[str, Any]:
    """A plain task with rate_limit = one per interval, on the same number of workers."""
    from bench.baselines import celery_app

    reset_redis(ws.redis_url)
    reset_fake(sp_url)
    plan = _plan(size)
    env = env_for("sqlite://", ws, sp_url, size.interval_s)
    env.update(
        BENCH_BROKER_URL=ws.redis_url,
        BENCH_SP_URL=sp_url,
        BENCH_RATE_LIMIT=f"{1 / size.interval_s:g}/s",
    )
    celery_app.conf.broker_url = ws.redis_url
    name = "bench.post_limited"
    procs = start_nodes("bare", size.nodes, size.concurrency, env, ws.logs("pacing-baseline"), "b")
    try:
        before = command_stats(ws.redis_url)
        for user, project, upload in plan:
            celery_app.send_task(name, args=[user, project, upload], queue="bench")
        got = wait_calls(sp_url, len(plan), _timeout(size) * 2)
        after = command_stats(ws.redis_url)
        time.sleep(0.5)
        executions = count_executions(procs, name)
    finally:
        stop_all(procs)
    return _summary(got, size, executions, stats_diff(before, after))


def _summary(
    got: list[dict[str, Any]], size: PacingSize, executions: int, commands: dict[str, int]
) -> dict[str, Any]:
    m = pacing_metrics(got, size.interval_s)
    m["executions_per_dispatch"] = executions / len(got) if got else float("nan")
    m["redis_per_dispatch"] = sum(commands.values()) / len(got) if got else float("nan")
    m["redis_top"] = sorted(commands.items(), key=lambda kv: -kv[1])[:6]
    m["timeline"] = [(c["userId"], c["mono"], c["violation"]) for c in got]
    return m


def run(ws: Workspace, size: PacingSize) -> dict[str, Any]:
    """Both sides against one fake server, reset between them."""
    fake, sp_url = start_fake(ws.logs("pacing"), interval_s=size.interval_s)
    try:
        spdist = run_spdist(ws, size, sp_url)
        baseline = run_baseline(ws, size, sp_url)
    finally:
        fake.stop()
    return {"size": size, "spdist": spdist, "baseline": baseline}
