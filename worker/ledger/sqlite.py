"""The ledger on SQLite: each step a short transaction of portable statements. The first
write of a claim (the fence's upsert) takes SQLite's write lock (BEGIN IMMEDIATE, db.py),
which serializes a user's claims as PostgreSQL's row lock on the fence does."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, Table, select, update

from worker.ledger import statements as q
from worker.ledger.base import SharedSteps, claim_params, loaded, record_params, unclaim_params
from worker.ledger.port import Fenced, Loaded, RoomCheck, Snapshot


class SqliteLedger(SharedSteps):
    name = "sqlite"

    def load(self, conn: Connection, request_id: str) -> Loaded | None:
        row = conn.execute(q.LOAD, {"rid": request_id}).first()
        conn.commit()
        return loaded(row) if row is not None else None

    def pending_events(self, conn: Connection, upload_id: str) -> bool:
        found = conn.execute(q.PENDING_EVENTS, {"upload": upload_id}).first()
        conn.commit()
        return found is not None

    def claim(
        self,
        conn: Connection,
        req: Snapshot,
        now: datetime,
        lease: datetime,
        attempt: dict[str, Any],
    ) -> int | Fenced | None:
        number = req.attempt_count + 1
        params = claim_params(req, now, lease, attempt)
        try:
            if conn.execute(q.FENCE_CLAIM, params).rowcount != 1:
                fence = conn.execute(q.FLOOR, params).scalar()
                conn.rollback()
                return Fenced(int(fence or 0))
            if conn.execute(q.CLAIM, params).rowcount != 1:
                conn.rollback()
                return None
            conn.execute(
                q.ADD_ATTEMPT,
                {
                    **attempt,
                    "request_id": req.id,
                    "number": number,
                    "user_id": req.user_id,
                    "started_at": now,
                },
            )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return number

    def unclaim(self, conn: Connection, req: Snapshot, number: int, fence_was: int) -> None:
        back = unclaim_params(req, number, fence_was)
        try:
            conn.execute(q.DROP_ATTEMPT, back)
            conn.execute(q.UNCLAIM_REQUEST, back)
            conn.execute(q.FENCE_RESTORE, back)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

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
        try:
            conn.execute(q.FENCE_SETTLE, {**params, **attempt_values})
            if conn.execute(q.MOVE, params).rowcount != 1:
                conn.commit()  # the fence still learns when the call left
                return False
            conn.execute(q.COMPLETE_ATTEMPT, {**params, **attempt_values})
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return True

    def insert(
        self,
        conn: Connection,
        values: dict[str, Any],
        *,
        coalesce: bool,
        check_room: RoomCheck | None = None,
    ) -> Any:
        # One write transaction: the count and the insert are serialized by SQLite.
        with conn.begin():
            if check_room is not None:
                check_room(conn)
            old = self.supersede(conn, values) if coalesce else None
            if old is not None:
                values["seq"] = old.seq
            self.insert_request(conn, values)
        return old

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
        candidates = conn.execute(select(*columns).where(where).order_by(order_by).limit(limit))
        rows = candidates.all()
        conn.commit()
        taken = []
        for row in rows:  # each row's update wins only if it still meets `where`
            won = conn.execute(
                update(table).where(table.c.id == row.id, where).values(**values)
            ).rowcount
            conn.commit()
            if won:
                taken.append(row)
        return taken

    def compact_tallies(self, conn: Connection, batch: int) -> int:
        return 0  # SQLite's triggers write the totals themselves

    def for_large_read(self, conn: Connection) -> None:
        return None
