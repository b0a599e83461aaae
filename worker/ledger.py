"""The dispatch's SQL: prebuilt Core statements, run on the one connection a dispatch holds.

Kept together, as data, and built once: on the hot path an ORM session costs about six
times what the statement itself does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, select, update

from worker.models import WAITING, DistributionAttempt, DistributionRequest, State

REQUESTS = cast(Table, DistributionRequest.__table__)
ATTEMPTS = cast(Table, DistributionAttempt.__table__)
R = REQUESTS.c
A = ATTEMPTS.c


@dataclass(frozen=True)
class Snapshot:
    """A request as a dispatch read it."""

    id: str
    user_id: str
    project_id: str
    upload_id: str
    priority: int
    seq: int
    state: str
    next_attempt_at: datetime | None
    attempt_count: int
    failures: int
    processing_since: datetime | None


COLUMNS = [getattr(R, name) for name in Snapshot.__dataclass_fields__]

LOAD = select(*COLUMNS).where(R.id == bindparam("rid"))

FLOOR = select(func.max(A.lane_free_us)).where(A.user_id == bindparam("uid"))

# The lane's waiting requests, each row carrying the floor too: one round trip.
WAITING_IN_LANE = select(*COLUMNS, FLOOR.scalar_subquery()).where(
    R.user_id == bindparam("uid"), R.state.in_(WAITING)
)

CLAIM = (
    update(REQUESTS)
    .where(
        R.id == bindparam("rid"),
        R.state.in_(WAITING),
        R.attempt_count == bindparam("was"),
    )
    .values(
        state=State.DISPATCHING,
        attempt_count=bindparam("number"),
        lease_expires_at=bindparam("lease"),
        dispatched_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
)

ADD_ATTEMPT = insert(ATTEMPTS)

UNCLAIM_REQUEST = (
    update(REQUESTS)
    .where(
        R.id == bindparam("rid"), R.state == State.DISPATCHING, R.attempt_count == bindparam("n")
    )
    .values(state=bindparam("back_to"), attempt_count=bindparam("was"), lease_expires_at=None)
)

DROP_ATTEMPT = delete(ATTEMPTS).where(A.request_id == bindparam("rid"), A.number == bindparam("n"))

# What an answer changes on its request (outcomes.Plan.request_values), fenced.
MOVE = (
    update(REQUESTS)
    .where(R.id == bindparam("rid"), R.state == State.DISPATCHING,
           R.attempt_count == bindparam("n"))
    .values(
        lease_expires_at=None,
        updated_at=bindparam("now"),
        state=bindparam("state"),
        last_message=bindparam("last_message"),
        next_attempt_at=bindparam("next_attempt_at"),
        failures=bindparam("failures"),
        processing_since=bindparam("processing_since"),
    )
)  # fmt: skip

COMPLETE_ATTEMPT = (
    update(ATTEMPTS)
    .where(A.request_id == bindparam("rid"), A.number == bindparam("n"))
    .values(
        finished_at=bindparam("now"),
        http_status=bindparam("http_status"),
        outcome=bindparam("outcome"),
        message=bindparam("message"),
        lane_free_us=bindparam("lane_free_us"),
    )
)


OLDEST_QUEUED_OF_PROJECT = (
    select(R.id)
    .where(R.project_id == bindparam("pid"), R.user_id == bindparam("uid"),
           R.state == State.QUEUED)
    .order_by(R.seq)
    .limit(1)
    .scalar_subquery()
)  # fmt: skip

SUPERSEDE = (
    update(REQUESTS)
    .where(R.id == OLDEST_QUEUED_OF_PROJECT, R.state == State.QUEUED)
    .values(state=State.SUPERSEDED, superseded_by=bindparam("by"), updated_at=bindparam("now"))
    .returning(R.id, R.seq, R.project_id, R.upload_id)
)

INSERT_REQUEST = insert(REQUESTS)


def supersede(conn: Connection, new: dict[str, Any]) -> Any:
    """Mark the project's oldest queued request superseded by `new`; (id, seq, project_id,
    upload_id) of the one replaced, or None. One UPDATE … RETURNING."""
    params = {"pid": new["project_id"], "uid": new["user_id"], "by": new["id"],
              "now": new["updated_at"]}  # fmt: skip
    return conn.execute(SUPERSEDE, params).first()


def insert_request(conn: Connection, values: dict[str, Any]) -> None:
    """Store a new request."""
    conn.execute(INSERT_REQUEST, values)


def load(conn: Connection, request_id: str) -> Snapshot | None:
    """The request, or None."""
    row = conn.execute(LOAD, {"rid": request_id}).first()
    conn.commit()
    return Snapshot(*row) if row is not None else None


def waiting_and_floor(conn: Connection, user_id: str) -> tuple[list[Snapshot], int]:
    """The user's waiting requests, and the latest `lane_free_us` its attempts recorded."""
    rows = conn.execute(WAITING_IN_LANE, {"uid": user_id}).all()
    floor = rows[0][-1] if rows else conn.execute(FLOOR, {"uid": user_id}).scalar()
    conn.commit()
    return [Snapshot(*r[:-1]) for r in rows], int(floor or 0)


def claim(conn: Connection, req: Snapshot, now: datetime, lease: datetime,
          attempt: dict[str, Any]) -> int | None:  # fmt: skip
    """Conditional UPDATE to `dispatching` plus the attempt row, committed; its number."""
    number = req.attempt_count + 1
    params = {"rid": req.id, "was": req.attempt_count, "number": number, "lease": lease,
              "now": now}  # fmt: skip
    try:
        if conn.execute(CLAIM, params).rowcount != 1:
            conn.rollback()
            return None
        conn.execute(ADD_ATTEMPT, {**attempt, "request_id": req.id, "number": number,
                                   "user_id": req.user_id, "started_at": now})  # fmt: skip
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return number


def unclaim(conn: Connection, req: Snapshot, number: int) -> None:
    """No call was made: drop the attempt row, put the request back as it was."""
    try:
        conn.execute(DROP_ATTEMPT, {"rid": req.id, "n": number})
        conn.execute(UNCLAIM_REQUEST, {"rid": req.id, "n": number, "back_to": req.state,
                                       "was": number - 1})  # fmt: skip
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def record(conn: Connection, req: Snapshot, number: int, now: datetime,
           request_values: dict[str, Any], attempt_values: dict[str, Any]) -> bool:  # fmt: skip
    """Move the request and complete its attempt, fenced by the attempt number."""
    moved = {"failures": req.failures, "processing_since": req.processing_since,
             **request_values}  # fmt: skip
    try:
        if conn.execute(MOVE, {"rid": req.id, "n": number, "now": now, **moved}).rowcount != 1:
            conn.rollback()
            return False
        conn.execute(COMPLETE_ATTEMPT, {"rid": req.id, "n": number, "now": now,
                                        **attempt_values})  # fmt: skip
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return True
