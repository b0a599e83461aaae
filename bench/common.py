"""What every scenario shares: the workspace, contexts, seeding, process start-up, statistics."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from worker.context import Context, build_context
from worker.dev.procs import PY, QUIET, Proc, spdist_env, wait_for, worker_argv
from worker.distributions import wake_lane
from worker.models import DistributionRequest, State, new_id, utcnow


@dataclass
class Workspace:
    """Where a run keeps its logs and files, and the private Redis every scenario uses."""

    folder: Path
    redis_url: str
    notes: list[str] = field(default_factory=list)

    def logs(self, name: str) -> Path:
        path = self.folder / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def user_ids(n: int, base: int = 0xB0000000) -> list[str]:
    """n distinct 24-hex userIds."""
    return [f"{base + i:024x}" for i in range(n)]


def hex24(n: int) -> str:
    return f"{n:024x}"


def make_ctx(
    db_url: str,
    redis_url: str,
    interval_s: float,
    keys: dict[str, str] | None = None,
    keys_file: Path | None = None,
) -> Context:
    """A Context for the benchmark process itself, with its own settings."""

    from worker.celery_app import app, send_dispatch
    from worker.settings import Settings

    settings = Settings(
        database_url=db_url,
        redis_url=redis_url,
        min_interval_s=interval_s,
        api_keys=keys or {},
        api_keys_file=keys_file,
    )
    app.conf.broker_url = redis_url
    return build_context(settings, send=send_dispatch)


def close_ctx(ctx: Context) -> None:
    ctx.close()


def env_for(
    db_url: str,
    ws: Workspace,
    sp_url: str,
    interval_s: float,
    *,
    keys: dict[str, str] | None = None,
    keys_file: Path | None = None,
) -> dict[str, str]:
    """A spdist process environment for the benchmark."""
    extra = {
        "SPDIST_MIN_INTERVAL_S": str(interval_s),
        "SPDIST_RECONCILE_EVERY_S": "1",
        "SPDIST_HTTP_TIMEOUT_S": "30",
        "SPDIST_HTTP_CONNECT_TIMEOUT_S": "5",
    }
    if keys_file is not None:
        extra["SPDIST_API_KEYS_FILE"] = str(keys_file)
    return spdist_env(db_url, ws.redis_url, sp_url, keys or {}, **extra)


def start_nodes(
    kind: str, count: int, concurrency: int, env: dict[str, str], logs: Path, prefix: str
) -> list[Proc]:
    """`count` worker nodes of spdist ("spdist") or of the bare app ("bare"), started together."""
    procs = []
    for i in range(1, count + 1):
        name = f"{prefix}{i}"
        if kind == "spdist":
            argv = worker_argv(name, concurrency)
        else:
            argv = [
                PY,
                "-m",
                "celery",
                "-A",
                "bench.baselines:celery_app",
                "worker",
                "-Q",
                "bench",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "info",
                "-n",
                f"{name}@%h",
                *QUIET,
            ]
        procs.append(Proc(name, argv, env, logs))
    for p in procs:
        wait_for(partial(_ready_or_gone, p), 60, f"{p.name}")
        if p.popen.poll() is not None:
            raise RuntimeError(f"{p.name} exited:\n{p.log()[-2000:]}")
    return procs


def stop_all(procs: Iterable[Proc]) -> None:
    for p in procs:
        p.stop()


def count_executions(procs: Iterable[Proc], task: str) -> int:
    """Executions of `task` the workers logged (succeeded, retried or raised)."""
    pattern = re.compile(rf"Task {re.escape(task)}\[[^\]]+\] (succeeded|retry|raised)")
    return sum(len(pattern.findall(p.log())) for p in procs)


def fake_base(sp_url: str) -> str:
    return sp_url.split("/pixelStripeApi")[0]


def calls(sp_url: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{fake_base(sp_url)}/_control/calls", timeout=30)
    resp.raise_for_status()
    return list(resp.json()["calls"])


def reset_fake(sp_url: str) -> None:
    httpx.post(f"{fake_base(sp_url)}/_control/reset", timeout=10).raise_for_status()


def wait_calls(sp_url: str, n: int, timeout: float, every: float = 0.5) -> list[dict[str, Any]]:
    """The fake's calls once there are at least n."""
    deadline = time.monotonic() + timeout
    while True:
        got = calls(sp_url)
        if len(got) >= n:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(got)} of {n} calls after {timeout:.0f} s")
        time.sleep(every)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def steady_rate(times: list[float]) -> float:
    """Calls per second over the middle 80% of calls: start-up and tail left out."""
    t = sorted(times)
    if len(t) < 10:
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else float("nan")
    lo, hi = len(t) // 10, len(t) - 1 - len(t) // 10
    return (hi - lo) / (t[hi] - t[lo])


# --- seeding -------------------------------------------------------------------------------

COLUMNS = (
    "id",
    "user_id",
    "project_id",
    "upload_id",
    "priority",
    "seq",
    "coalesce",
    "state",
    "created_at",
    "updated_at",
    "attempt_count",
    "failures",
    "published_at",
)


def request_rows(lanes: dict[str, int]) -> list[dict[str, Any]]:
    """`count` queued requests per user, as enqueue() stores them (published, in seq order)."""
    now, seq = utcnow(), time.time_ns() // 1000
    rows: list[dict[str, Any]] = []
    for u, (user, count) in enumerate(lanes.items()):
        for k in range(count):
            seq += 1
            rows.append(
                {
                    "id": new_id(),
                    "user_id": user,
                    "project_id": hex24(0xC000000 + u * 1000 + k),  # noqa: E501
                    "upload_id": hex24(0xD000000 + len(rows)),
                    "priority": 0,
                    "seq": seq,
                    "coalesce": False,
                    "state": State.QUEUED,
                    "created_at": now,
                    "updated_at": now,
                    "attempt_count": 0,
                    "failures": 0,
                    "published_at": now,
                }
            )
    return rows


def insert_rows(ctx: Context, rows: list[dict[str, Any]]) -> None:
    """Bulk insert: COPY on Postgres, executemany elsewhere."""
    engine = ctx.engine
    if engine.dialect.name == "postgresql":
        _copy(engine, rows)
        return
    with ctx.sessions.begin() as session:
        session.execute(insert(DistributionRequest), rows)


def _copy(engine: Any, rows: list[dict[str, Any]]) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        with cur.copy(f"COPY distribution_requests ({', '.join(COLUMNS)}) FROM STDIN") as cp:
            for r in rows:
                cp.write_row([str(r[c]) if c == "state" else r[c] for c in COLUMNS])
        raw.commit()
        cur.execute("ANALYZE distribution_requests")
        raw.commit()
    finally:
        raw.close()


def fill_lanes(ctx: Context, rows: list[dict[str, Any]], batch: int = 2000) -> None:
    """Put the stored requests in their Redis lanes, as publish() does, pipelined."""
    from worker.pacer import keys, lane_member

    pipe = ctx.pacer.redis.pipeline(transaction=False)
    for i, r in enumerate(rows, 1):
        m = lane_member(r["seq"], r["id"], r["project_id"], r["upload_id"])
        pipe.zadd(keys.lane_queue(r["user_id"]), {m: -r["priority"]}, nx=True)
        if i % batch == 0:
            pipe.execute()
    pipe.execute()


def kick_lanes(ctx: Context, users: Iterable[str]) -> None:
    """Wake every lane: one dispatch message per lane head, as enqueue() does (threads only
    overlap the round trips; each wake_lane is the real one)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda user: wake_lane(ctx, user), users))


def _ready_or_gone(p: Proc) -> bool:
    return "ready." in p.log() or p.popen.poll() is not None
