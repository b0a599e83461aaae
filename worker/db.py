"""Engine and sessions for the system of record (SQLite by default, Postgres in production)."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, create_engine, event, exc

from worker.settings import get_settings


def make_engine(url: str, **kw: Any) -> Engine:
    """An engine tuned for many short transactions from several processes."""
    if url.startswith("sqlite"):
        args = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(url, connect_args=args, **kw)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own BEGIN handling breaks SERIALIZABLE-ish claims; take it over.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    if "poolclass" not in kw:
        kw.update(pool_size=5, max_overflow=5)
    engine = create_engine(url, **kw)
    event.listen(engine, "checkin", _note_checkin)
    dialect = engine.dialect

    def ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        """SQLAlchemy's pre-ping (the dialect's own ping), for connections that sat idle."""
        if time.monotonic() - record.info.get("checked_in", 0.0) < PING_IF_IDLE_S:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as err:  # the pool retries the checkout on a new connection
            raise exc.DisconnectionError(f"stale connection: {err}") from err

    event.listen(engine, "checkout", ping_if_idle)
    return engine


# A connection back in the pool less than this long ago is handed out without a ping:
# `pool_pre_ping` pinged on every checkout, one more round trip on every enqueue and
# dispatch. One that went stale within this window fails its statement; SQLAlchemy then
# invalidates the pool, and the caller's own error handling (503, task retry) applies.
PING_IF_IDLE_S = 1.0


_AUTOCOMMIT: WeakKeyDictionary[Engine, Engine] = WeakKeyDictionary()


def dispose(engine: Engine) -> None:
    """Close `engine`'s pooled connections, and its autocommit twin's if it has one."""
    twin = _AUTOCOMMIT.pop(engine, None)
    if twin is not None:
        twin.dispose()
    engine.dispose()


def autocommit_engine(engine: Engine) -> Engine:
    """`engine`'s PostgreSQL database through a pool of its own whose connections are in
    autocommit from the start. A dispatch runs only single statements; switching a pooled
    connection to autocommit and back at every checkout cost a dispatch CPU
    (BENCHMARKS.md, design measurements).
    Other databases: `engine` itself."""
    if engine.dialect.name != "postgresql":
        return engine
    twin = _AUTOCOMMIT.get(engine)
    if twin is None:
        url = engine.url.render_as_string(hide_password=False)
        # Nothing to roll back on an autocommit connection: no reset when it goes back.
        twin = _AUTOCOMMIT[engine] = make_engine(
            url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None
        )
        event.listen(engine, "engine_disposed", lambda _engine: twin.dispose())
    return twin


def _note_checkin(_dbapi_conn: Any, record: Any) -> None:
    record.info["checked_in"] = time.monotonic()


def _sqlite_pragmas(dbapi_conn: Any, _record: object) -> None:
    dbapi_conn.isolation_level = None  # let the "begin" listener open transactions
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


@lru_cache
def get_engine() -> Engine:
    """The process's engine for SPDIST_DATABASE_URL."""
    return make_engine(get_settings().database_url)
