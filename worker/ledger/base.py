"""What both adapters do the same way: portable statements in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, update

from worker.ledger import statements as q
from worker.ledger.port import Snapshot
from worker.models import State, utcnow


class SharedSteps:
    """The ledger's steps whose SQL is the same on every database."""

    def waiting_and_floor(self, conn: Connection, user_id: str) -> tuple[list[Snapshot], int]:
        rows = conn.execute(q.WAITING_IN_LANE, {"uid": user_id}).all()
        floor = rows[0][-1] if rows else conn.execute(q.FLOOR, {"uid": user_id}).scalar()
        conn.commit()
        return [Snapshot(*r[:-1]) for r in rows], int(floor or 0)

    def restore_fence(self, conn: Connection, req: Snapshot, number: int, fence_was: int) -> None:
        params = {
            "uid": req.user_id,
            "rid": req.id,
            "n": number,
            "fence_was": fence_was,
            "now": utcnow(),
        }
        try:
            conn.execute(q.FENCE_RESTORE, params)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def supersede(self, conn: Connection, values: dict[str, Any]) -> Any:
        params = {
            "pid": values["project_id"],
            "uid": values["user_id"],
            "by": values["id"],
            "now": values["updated_at"],
        }
        return conn.execute(q.SUPERSEDE, params).first()

    def insert_request(self, conn: Connection, values: dict[str, Any]) -> None:
        conn.execute(q.INSERT_REQUEST, values)

    def transition(
        self, conn: Any, request_id: str, from_: Iterable[State] | State, to: State, **values: Any
    ) -> bool:
        states = [from_] if isinstance(from_, State) else list(from_)
        done = conn.execute(
            update(q.REQUESTS)
            .where(q.R.id == request_id, q.R.state.in_(states))
            .values(state=to, updated_at=values.pop("updated_at", None) or utcnow(), **values)
        )
        return bool(done.rowcount == 1)
