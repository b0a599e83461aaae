"""Scenario 3: POST /v1/distributions under 32 concurrent clients, spdist's API against a bare
FastAPI route that parses the same body; both under uvicorn with the same flags."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import Workspace, env_for, user_ids
from bench.infra import postgres_db, reset_redis
from worker.dev.procs import PY, Proc, wait_for
from worker.dev.servers import free_port

TOKEN = "bench-token"


@dataclass(frozen=True)
class ApiSize:
    concurrency: int = 32
    seconds: float = 5.0
    warmup_s: float = 1.0
    users: int = 100


def _serve(app: str, env: dict[str, str], ws: Workspace, name: str) -> tuple[Proc, str]:
    port = free_port()
    argv = [
        PY,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = Proc(name, argv, env, ws.logs("api"))
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{proc.log()[-2000:]}")
        try:
            return httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, name)
    return proc, base


def _load(base: str, users: list[str], size: ApiSize) -> dict[str, Any]:
    argv = [
        PY,
        "-m",
        "bench.load",
        f"{base}/v1/distributions",
        "--token",
        TOKEN,
        "--users",
        ",".join(users),
        "--concurrency",
        str(size.concurrency),
        "--seconds",
        str(size.seconds),
        "--warmup",
        str(size.warmup_s),
    ]
    out = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=size.seconds + size.warmup_s + 60
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(ws: Workspace, size: ApiSize) -> dict[str, Any]:
    """The bare route first, then spdist's API on Postgres with the private Redis."""
    reset_redis(ws.redis_url)
    users = user_ids(size.users, base=0xA1000000)
    keys = {u: f"key-{u}" for u in users}
    with postgres_db() as db:
        env = env_for(db, ws, "http://127.0.0.1:9/pixelStripeApi", 1.0, keys=keys)
        env["SPDIST_API_TOKENS"] = TOKEN
        proc, base = _serve("bench.baselines:api_app", env, ws, "api-baseline")
        try:
            baseline = _load(base, users, size)
        finally:
            proc.stop()
        proc, base = _serve("api.main:app", env, ws, "api-spdist")
        try:
            spdist = _load(base, users, size)
        finally:
            proc.stop()
    return {"size": size, "spdist": spdist, "baseline": baseline}
