"""First-run problems, each named in one line with its fix: real processes, both databases."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.main import create_app
from tests.conftest import PG_ADMIN_URL, USER_KEYS, need
from tests.integration.test_api import TOKEN, TestClient, close, free_port, make_ctx
from tests.integration.test_stack import start_up
from worker.dev.procs import PY, ROOT, spdist_env

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody migrated."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    import psycopg

    need("127.0.0.1", 5432, "PostgreSQL")
    name = f"spdist_fresh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_unmigrated_database_says_run_migrate(empty_db_url: str, redis_url: str) -> None:
    env = spdist_env(empty_db_url, redis_url, "http://127.0.0.1:9/x", USER_KEYS)
    done = subprocess.run(
        [PY, "-m", "worker.cli", "ls"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "run `spdist migrate`" in lines[0] and len(lines[0]) < 120, lines
    assert "SELECT" not in done.stderr


def test_unmigrated_database_answers_503_with_the_fix(empty_db_url: str, redis_url: str) -> None:
    ctx = make_ctx(empty_db_url, redis_url, [])
    try:
        with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as client:
            r = client.get("/v1/distributions", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 503 and "run `spdist migrate`" in r.json()["detail"]
        assert "SELECT" not in r.text
    finally:
        close(ctx)


def test_taken_port_is_reported_before_the_banner(redis_url: str, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        env = spdist_env(
            f"sqlite:///{tmp_path / 'up.db'}",
            redis_url,
            "http://127.0.0.1:9/x",
            {},
            SPDIST_API_PORT=str(taken),
            SPDIST_FLOWER_PORT=str(free_port()),
        )
        env.pop("SPDIST_API_KEYS")
        proc, log = start_up(env, tmp_path)
        assert proc.wait(60) == 1
    out = log.read_text()
    assert f"port {taken} is already in use" in out and "SPDIST_API_PORT" in out
    assert "Ctrl-C stops everything" not in out and "  api | " not in out
