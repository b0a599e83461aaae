"""Enqueue rate of the HTTP API: requests per second and latency at N concurrent clients.

Starts `spdist api` (uvicorn, WEB_CONCURRENCY processes) on a fresh Postgres database
and a Redis database of its own, then has N asyncio clients POST /v1/distributions
back to back for a fixed time. No worker runs: this measures the enqueue path only
(validate, INSERT, lane ZADD, wake script, dispatch message to the broker).

    .venv/bin/python bench/api_enqueue.py --clients 32 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid

import httpx
import psycopg
import redis

PG_ADMIN = os.environ.get("SPDIST_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
USERS = {f"{i:024x}": f"sk-bench-{i}" for i in range(1, 33)}
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def client(http: httpx.AsyncClient, n: int, stop: float, lat: list[float]) -> int:
    errors, i = 0, 0
    user = list(USERS)[n % len(USERS)]
    while time.perf_counter() < stop:
        i += 1
        body = {
            "userId": user,
            "projectId": f"{n:012x}{i:012x}",
            "uploadId": uuid.uuid4().hex[:24],
            "coalesce": False,
        }
        t = time.perf_counter()
        r = await http.post("/v1/distributions", json=body)
        lat.append(time.perf_counter() - t)
        errors += r.status_code != 202
    return errors


async def load(base: str, clients: int, seconds: float) -> tuple[list[float], int, float]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as http:
        for _ in range(50):  # warm up
            await http.post(
                "/v1/distributions",
                json={"userId": list(USERS)[0], "projectId": "f" * 24, "uploadId": "e" * 24},
            )
        lat: list[float] = []
        start = time.perf_counter()
        errs = await asyncio.gather(
            *(client(http, n, start + seconds, lat) for n in range(clients))
        )
        return lat, sum(errs), time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--api-processes", type=int, default=1)
    p.add_argument("--redis-db", type=int, default=10)
    args = p.parse_args()
    name = f"spdist_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPDIST_")},
        "SPDIST_DATABASE_URL": db_url,
        "SPDIST_REDIS_URL": redis_url,
        "SPDIST_API_KEYS": json.dumps(USERS),
        "SPDIST_API_TOKENS": TOKEN,
        "WEB_CONCURRENCY": str(args.api_processes),
    }
    subprocess.run(
        [sys.executable, "-m", "worker.cli", "migrate"], env=env, check=True, capture_output=True
    )
    argv = [sys.executable, "-m", "worker.cli", "api", "--port", str(port)]
    api = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        lat, errors, elapsed = asyncio.run(load(base, args.clients, args.seconds))
    finally:
        api.terminate()
        api.wait(30)
        with redis.Redis.from_url(redis_url) as r:
            r.flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    lat.sort()
    q = statistics.quantiles(lat, n=100)
    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(
        f"api: uvicorn x{args.api_processes} on Postgres + Redis; {args.clients} clients, "
        f"{elapsed:.1f} s, {len(lat)} requests, {errors} not 202"
    )
    print(f"throughput: {len(lat) / elapsed:.0f} req/s")
    print(
        f"latency: p50 {q[49] * 1000:.1f} ms, p95 {q[94] * 1000:.1f} ms, "
        f"p99 {q[98] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
