"""What both adapters do the same way: portable statements in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, update

from worker.ledger import statements as q
from worker.ledger.port import Loaded, Snapshot
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
        self,
        conn: Any,
        request_id: str,
        from_: Iterable[State] | State,
        to: State,
        *,
        only_if: Iterable[ColumnElement[bool]] = (),
        **values: Any,
    ) -> bool:
        states = [from_] if isinstance(from_, State) else list(from_)
        done = conn.execute(
            update(q.REQUESTS)
            .where(q.R.id == request_id, q.R.state.in_(states), *only_if)
            .values(state=to, updated_at=values.pop("updated_at", None) or utcnow(), **values)
        )
        return bool(done.rowcount == 1)


# The parameters of the steps whose statements differ by database but take the same values.
def claim_params(
    req: Snapshot, now: datetime, lease: datetime, attempt: dict[str, Any]
) -> dict[str, Any]:
    return {
        "rid": req.id,
        "uid": req.user_id,
        "was": req.attempt_count,
        "number": req.attempt_count + 1,
        "lease": lease,
        "now": now,
        **attempt,
    }


def loaded(row: Any) -> Loaded:
    """LOAD's row as a Loaded."""
    return Loaded(Snapshot(*row[:-3]), int(row[-3] or 0), not row[-2], bool(row[-1]))


def unclaim_params(req: Snapshot, number: int, fence_was: int) -> dict[str, Any]:
    return {
        "rid": req.id,
        "uid": req.user_id,
        "n": number,
        "back_to": req.state,
        "was": number - 1,
        "fence_was": fence_was,
        "now": utcnow(),
    }


def record_params(
    req: Snapshot, number: int, now: datetime, request_values: dict[str, Any], fence_was: int
) -> dict[str, Any]:
    return {
        "failures": req.failures,
        "processing_since": req.processing_since,
        **request_values,
        "rid": req.id,
        "uid": req.user_id,
        "n": number,
        "now": now,
        "fence_was": fence_was,
    }
