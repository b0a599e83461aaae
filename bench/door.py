"""Scenario 1b: pacing judged at the door, where the path between the slot and the arrival
varies: through a TLS front whose connection set-up takes 0-50 ms and 0-300 ms (and which
closes idle connections), with every core kept busy by other processes; and, as the answer
a user would otherwise pick, a Celery task holding a per-user Redis lock (SET NX PX
interval) that retries with a countdown while it is taken."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.common import (
    Workspace,
    count_executions,
    env_for,
    reset_fake,
    start_nodes,
    stop_all,
    wait_calls,
)
from bench.fake import start as start_fake
from bench.infra import reset_redis
from bench.pacing import PacingSize, _plan, _summary, _timeout, run_spdist
from worker.dev.network import TlsFront

FRONTS = {"front 0-50 ms": (0.0, 0.05), "front 0-300 ms": (0.0, 0.3)}


@contextmanager
def busy_cores() -> Iterator[None]:
    """Every core kept busy by another process for the block's duration."""
    spin = [sys.executable, "-c", "while True: pass"]
    procs = [subprocess.Popen(spin) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run_diy(ws: Workspace, size: PacingSize, sp_url: str) -> dict[str, Any]:
    """The do-it-yourself answer, on the same number of workers."""
    from bench.baselines import celery_app

    reset_redis(ws.redis_url)
    reset_fake(sp_url)
    plan = _plan(size)
    env = env_for("sqlite://", ws, sp_url, size.interval_s)
    env.update(
        BENCH_BROKER_URL=ws.redis_url, BENCH_SP_URL=sp_url, BENCH_INTERVAL_S=str(size.interval_s)
    )
    celery_app.conf.broker_url = ws.redis_url
    name = "bench.post_locked"
    procs = start_nodes("bare", size.nodes, size.concurrency, env, ws.logs("door-diy"), "d")
    try:
        for user, project, upload in plan:
            celery_app.send_task(name, args=[user, project, upload], queue="bench")
        got = wait_calls(sp_url, len(plan), _timeout(size) * 3)
        executions = count_executions(procs, name)
    finally:
        stop_all(procs)
    return _summary(got, size, executions, {})


def run(ws: Workspace, size: PacingSize) -> dict[str, Any]:
    """Each variant against one fake (a front before it where named), reset between them."""
    fake, sp_url = start_fake(ws.logs("door"), interval_s=size.interval_s)
    port = int(sp_url.split("/pixelStripeApi")[0].rsplit(":", 1)[1])
    out: dict[str, Any] = {"size": size}
    try:
        for label, setup in FRONTS.items():
            front = TlsFront(port, ws.folder, setup_s=setup, idle_close_s=1.0)
            try:
                env = {"SSL_CERT_FILE": str(front.ca_path)}
                out[label] = run_spdist(
                    ws, size, sp_url, call_url=front.url(), name=f"door-{setup[1]}", extra_env=env
                )
            finally:
                front.close()
        with busy_cores():
            out["busy cores"] = run_spdist(ws, size, sp_url, name="door-busy")
        out["diy lock"] = run_diy(ws, size, sp_url)
    finally:
        fake.stop()
    return out
