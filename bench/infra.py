"""The benchmark's own services and probes: a private Redis, throwaway databases, RSS, stats."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from worker.dev.cpu import descendants
from worker.dev.servers import RedisServer

PG_ADMIN_URL = os.environ.get(
    "SPDIST_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_BASE = os.environ.get("SPDIST_BENCH_PG_BASE", "postgresql+psycopg://postgres@127.0.0.1:5432")


@contextmanager
def private_redis(folder: Path) -> Iterator[str]:
    """A redis-server of our own on a free port, so INFO commandstats counts only us."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed; the benchmark runs its own Redis")
    server = RedisServer(folder, args=("--dir", str(folder)))
    try:
        yield server.url
    finally:
        server.kill()


def reset_redis(url: str) -> None:
    """Empty the private Redis and zero its statistics between scenarios."""
    client = redis.Redis.from_url(url)
    client.flushall()
    client.config_resetstat()
    client.close()


def command_stats(url: str) -> dict[str, int]:
    """Calls per command from INFO commandstats (commands run inside Lua scripts included)."""
    client = redis.Redis.from_url(url)
    try:
        info = client.info("commandstats")
    finally:
        client.close()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def stats_diff(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands run between two snapshots."""
    return {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0) > 0}


@contextmanager
def postgres_db(prefix: str = "spdist_bench") -> Iterator[str]:
    """A fresh, migrated Postgres database, dropped afterwards."""
    import psycopg

    from worker.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_BASE}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlite_db(folder: Path, name: str) -> str:
    """A fresh, migrated SQLite file."""
    from worker.migrate import upgrade

    url = f"sqlite:///{folder / name}"
    upgrade(url)
    return url


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB (VmRSS from /proc)."""
    total_kb = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total_kb / 1024


def write_keys_file(folder: Path, users: list[str]) -> Path:
    """SPDIST_API_KEYS_FILE for many users (too many for an environment variable)."""
    path = folder / f"keys-{len(users)}-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps({u: f"key-{u}" for u in users}))
    return path
