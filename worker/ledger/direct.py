"""Statements compiled once for PostgreSQL and run on psycopg directly (the hot path)."""

from __future__ import annotations

from enum import Enum
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row, tuple_row
from sqlalchemy import ClauseElement, Connection
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.exc import DBAPIError


class Direct:
    """A prebuilt statement compiled once for PostgreSQL and run on the psycopg connection
    underneath the SQLAlchemy one. On the hot path SQLAlchemy's execution context cost more
    CPU than the statement (BENCHMARKS.md, design measurements). Errors come out as
    SQLAlchemy's, and a lost connection is invalidated, as `Connection.execute` does."""

    def __init__(
        self, statement: ClauseElement, *, plan_each_time: bool = False, named: bool = False
    ) -> None:
        compiled = statement.compile(dialect=psycopg_dialect())
        self.sql = str(compiled)
        self.defaults = {k: _plain(v) for k, v in compiled.params.items()}
        # psycopg prepares a statement run five times on a connection, and PostgreSQL then
        # settles on a generic plan, made without the parameters' values. `plan_each_time`
        # never prepares it: each run is planned from its values.
        self.prepare: bool | None = False if plan_each_time else None
        # Plain tuples unless the caller reads columns by name: a named tuple cost a good
        # part of a dispatch statement's client CPU.
        self.row_factory: Any = namedtuple_row if named else tuple_row

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every parameter of the statement, as psycopg takes them."""
        return {**self.defaults, **{k: _plain(v) for k, v in params.items()}}

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[Any]:
        """Run it on `conn` (PostgreSQL, autocommit) and return its rows."""
        values = self.values(params)
        dbapi_conn = conn.connection.driver_connection
        try:
            cur = dbapi_conn.cursor(row_factory=self.row_factory)  # type: ignore[union-attr]
            cur.execute(self.sql, values, prepare=self.prepare)
            return cur.fetchall() if cur.description else []
        except psycopg.Error as err:
            raw: Any = err
            lost = conn.dialect.is_disconnect(raw, conn.connection.dbapi_connection, None)
            if lost:
                conn.invalidate(err)
            raise DBAPIError.instance(
                self.sql, values, err, psycopg.Error, connection_invalidated=lost
            ) from err


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value
