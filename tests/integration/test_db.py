"""Pool checkouts on PostgreSQL: an idle connection is pinged and replaced when dead; one
back in the pool moments ago is not pinged (a round trip saved on every enqueue)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from worker import db, ledger
from worker.db import make_engine

pytestmark = pytest.mark.integration


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pg_url: str, pid: int) -> None:
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.fixture
def dead_link(pg_url: str) -> Iterator[tuple[Engine, int]]:
    """A one-connection engine whose pooled connection's backend was just terminated."""
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        pid = _backend_pid(engine)
        _terminate(pg_url, pid)
        yield engine, pid
    finally:
        engine.dispose()


def test_idle_connection_killed_is_replaced_at_checkout(
    dead_link: tuple[Engine, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, pid = dead_link
    monkeypatch.setattr(db, "PING_IF_IDLE_S", 0.0)  # every checkout counts as idle
    assert _backend_pid(engine) != pid  # pinged, found dead, reconnected: no error


def test_recently_used_connection_is_not_pinged(
    dead_link: tuple[Engine, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, pid = dead_link
    monkeypatch.setattr(db, "PING_IF_IDLE_S", 3600.0)
    with pytest.raises(DBAPIError) as err:  # no ping: the statement meets the dead link
        _backend_pid(engine)
    assert err.value.connection_invalidated
    assert _backend_pid(engine) != pid  # the pool replaced it


def test_direct_statement_fails_as_sqlalchemy_does(pg_url: str) -> None:
    """The hot statements run on psycopg directly; a lost connection must still raise
    SQLAlchemy's error (what the dispatch retries on) and be dropped from the pool."""
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            _terminate(pg_url, pid)
            with pytest.raises(DBAPIError) as err:
                ledger.PostgresLedger().load(conn, "x" * 26)
            assert err.value.connection_invalidated and conn.invalidated
        assert _backend_pid(engine) != pid
    finally:
        engine.dispose()
