"""Shared fixtures: settings, databases (SQLite and Postgres), Redis, and service checks."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get(
    "SPDIST_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
USER_KEYS = {f"{i:024x}": f"sk-test-{i}-secret" for i in range(1, 11)}


def reachable(host: str, port: int) -> bool:
    """Whether a TCP service answers."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need(host: str, port: int, name: str) -> None:
    """Skip when a service is down locally; under CI=true, fail instead."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database of its own, emptied before and after the test.

    ``SPDIST_TEST_REDIS_DB`` picks another database number, so two checkouts can run their
    suites side by side on one Redis.
    """
    import redis

    need(REDIS_HOST, REDIS_PORT, "Redis")
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{os.environ.get('SPDIST_TEST_REDIS_DB', '9')}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, migrated Postgres database, dropped after the test."""
    import psycopg

    need("127.0.0.1", 5432, "PostgreSQL")
    name = f"spdist_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    from worker.migrate import upgrade

    upgrade(url)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite file."""
    from worker.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'spdist.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs on SQLite and on Postgres."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))
