"""The ledger on PostgreSQL: each step one statement (writable CTEs) run directly on
psycopg, so on an autocommit connection each is one round trip and still all-or-nothing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, Table, select, text, update

from worker.ledger import statements as q
from worker.ledger.base import SharedSteps, claim_params, loaded, record_params, unclaim_params
from worker.ledger.locks import lane_lock
from worker.ledger.port import Fenced, Loaded, RoomCheck, Snapshot


class PostgresLedger(SharedSteps):
    name = "postgresql"

    def load(self, conn: Connection, request_id: str) -> Loaded | None:
        rows = q.LOAD_DIRECT.rows(conn, {"rid": request_id})
        return loaded(rows[0]) if rows else None

    def pending_events(self, conn: Connection, upload_id: str) -> bool:
        return bool(q.PENDING_EVENTS_DIRECT.rows(conn, {"upload": upload_id}))

    def claim(
        self,
        conn: Connection,
        req: Snapshot,
        now: datetime,
        lease: datetime,
        attempt: dict[str, Any],
    ) -> int | Fenced | None:
        number = req.attempt_count + 1
        params = {**claim_params(req, now, lease, attempt), "started_at": now}
        got, fence = q.CLAIM_DIRECT.rows(conn, params)[0]
        if got is not None:
            return number
        return Fenced(int(fence)) if (fence or 0) > attempt["slot_us"] else None

    def unclaim(self, conn: Connection, req: Snapshot, number: int, fence_was: int) -> None:
        q.UNCLAIM_DIRECT.rows(conn, unclaim_params(req, number, fence_was))

    def record(
        self,
        conn: Connection,
        req: Snapshot,
        number: int,
        now: datetime,
        request_values: dict[str, Any],
        attempt_values: dict[str, Any],
        fence_was: int,
    ) -> bool:
        params = record_params(req, number, now, request_values, fence_was)
        return bool(q.RECORD_DIRECT.rows(conn, {**params, **attempt_values}))

    def insert(
        self,
        conn: Connection,
        values: dict[str, Any],
        *,
        coalesce: bool,
        check_room: RoomCheck | None = None,
    ) -> Any:
        # Autocommitted single statements: the count and the insert are held together by
        # this process's lock on the lane (see locks.lane_lock).
        with lane_lock(values["user_id"]):
            if check_room is not None:
                check_room(conn)
            if not coalesce:
                self.insert_request(conn, values)
                conn.commit()
                return None
            rows = q.SUPERSEDE_AND_INSERT_DIRECT.rows(conn, supersede_and_insert_params(values))
            return superseded(rows)

    def take(
        self,
        conn: Connection,
        table: Table,
        where: ColumnElement[bool],
        order_by: Any,
        values: dict[str, Any],
        columns: Iterable[Any],
        limit: int,
    ) -> list[Row[Any]]:
        # One statement: the rows another taker has locked are skipped, not waited for.
        picked = (
            select(table.c.id)
            .where(where)
            .order_by(order_by)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = conn.execute(
            update(table)
            .where(table.c.id.in_(picked.scalar_subquery()))
            .values(**values)
            .returning(*columns)
        ).all()
        conn.commit()
        return list(rows)

    def compact_tallies(self, conn: Connection, batch: int) -> int:
        return int(conn.execute(q.COMPACT_TALLIES, {"batch": batch}).one()[0])

    def for_large_read(self, conn: Connection) -> None:
        conn.execute(text("SET LOCAL jit = off"))


def superseded(rows: list[Any]) -> Any:
    """From SUPERSEDE_AND_INSERT's rows: the request it superseded, or None."""
    row = rows[0] if rows else None
    return row if row is not None and row[0] is not None else None


def supersede_and_insert_params(values: dict[str, Any]) -> dict[str, Any]:
    """SUPERSEDE_AND_INSERT's parameters for the new request's row `values`."""
    values = {"callback_url": None, **values}  # optional: a request without a callback
    params = {f"new_{n}": values[n] for n in q.NEW_REQUEST_COLUMNS}
    params.update(
        pid=values["project_id"], uid=values["user_id"], by=values["id"], now=values["updated_at"]
    )
    return params
