"""Held requests: stored in SQL, in no lane and using no slot, until a release puts them in
line (after the caller's own checks: smoke tests, asset scans).

A held request is never published to Redis, so no dispatch, reconciler pass or outbox run
can reach it: all of them only see `queued` and `retrying` rows (models.WAITING).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import Connection, bindparam, update

from worker import backpressure, distributions, ledger
from worker.context import Context
from worker.errors import ConflictError
from worker.ledger.locks import lane_lock
from worker.models import DistributionRequest, State, utcnow
from worker.pacer import lane_member

log = logging.getLogger(__name__)
R = ledger.R

# A newer held request replaces every older held one of its project (and user).
SUPERSEDE_HELD = (
    update(ledger.REQUESTS)
    .where(
        R.project_id == bindparam("pid"),
        R.user_id == bindparam("uid"),
        R.state == State.HELD,
        R.id != bindparam("by"),
    )
    .values(state=State.SUPERSEDED, superseded_by=bindparam("by"), updated_at=bindparam("now"))
)


def enqueue_held(ctx: Context, values: dict[str, Any], coalesce: bool) -> DistributionRequest:
    """Store a new request `held` (counted by back-pressure; superseding the project's
    older held one when it coalesces); nothing goes to Redis."""
    values["state"] = State.HELD
    user_id = values["user_id"]
    with lane_lock(user_id), ctx.sessions.begin() as session:
        conn = session.connection()
        backpressure.check(ctx, user_id, backpressure.count_waiting(conn, user_id))
        if coalesce:
            _supersede_held(conn, values)
        ctx.ledger.insert_request(conn, values)
    return DistributionRequest(**values)


def _supersede_held(conn: Connection, values: dict[str, Any]) -> None:
    params = {
        "pid": values["project_id"],
        "uid": values["user_id"],
        "by": values["id"],
        "now": values["updated_at"],
    }
    conn.execute(SUPERSEDE_HELD, params)


def release(ctx: Context, request_id: str, caller: str | None = None) -> DistributionRequest:
    """Put a held request in line (at the end of its lane by its priority, or in the place
    of the project's queued request it supersedes when it coalesces) and wake the lane;
    with Redis down it stays queued in SQL and the outbox publishes it."""
    with ctx.sessions.begin() as session:
        req = distributions.get(session, request_id)
        distributions.authorize(ctx, caller, req, "release")
        now = utcnow()
        conn = session.connection()
        old = _supersede_queued(ctx, conn, req, now) if req.coalesce else None
        seq = old.seq if old is not None else time.time_ns() // 1000
        released = ctx.ledger.transition(
            conn,
            request_id,
            State.HELD,
            State.QUEUED,
            seq=seq,
            published_at=None,
            next_attempt_at=None,
            updated_at=now,
        )
        if not released:
            raise ConflictError(f"distribution {request_id} is {req.state}, not held")
    replaces = lane_member(old.seq, old.id, old.project_id, old.upload_id) if old else None
    with ctx.sessions() as session:
        req = distributions.get(session, request_id)
    distributions.publish(ctx, req, replaces=replaces)
    log.info("released %s into the lane of %s", request_id, req.user_id)
    return req


def _supersede_queued(ctx: Context, conn: Connection, req: DistributionRequest, now: Any) -> Any:
    """The project's oldest queued request, now superseded by `req` (None if there is none).
    Only while `req` is held: a repeated release must not supersede anything."""
    if req.state != State.HELD:
        return None
    values = {"project_id": req.project_id, "user_id": req.user_id, "id": req.id, "updated_at": now}
    return ctx.ledger.supersede(conn, values)
