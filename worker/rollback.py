"""Rollback: distribute again a project's previous upload that reached Streampixel (its
call answered 200, `succeeded`, or its `build.distributing` came, `confirmed`)."""

from __future__ import annotations

import logging

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from worker import backpressure, callers, distributions, validation
from worker.context import Context
from worker.errors import NotFoundError
from worker.ledger.locks import lane_lock
from worker.models import DistributionRequest, State
from worker.pacer import lane_member

log = logging.getLogger(__name__)
DISTRIBUTED = (State.SUCCEEDED, State.CONFIRMED)
PRIORITY = 100  # ahead of everything else in the lane
R = DistributionRequest


def _distributed(project_id: str) -> Select[DistributionRequest]:
    """The project's requests that reached Streampixel, the most recently called first."""
    return (
        select(R)
        .where(R.project_id == project_id, R.state.in_(DISTRIBUTED))
        .order_by(R.dispatched_at.desc(), R.created_at.desc(), R.id.desc())
        .limit(1)
    )


def choose(
    session: Session, project_id: str, to_upload_id: str | None = None
) -> tuple[DistributionRequest, DistributionRequest]:
    """(the latest distributed request of the project, the one to roll back to): the
    latest one of another upload, or the latest one of `to_upload_id`. NotFoundError when
    there is none."""
    latest = session.scalars(_distributed(project_id)).first()
    if latest is None:
        raise NotFoundError(f"project {project_id} has no distributed upload to roll back from")
    query = _distributed(project_id)
    if to_upload_id is None:
        query = query.where(R.upload_id != latest.upload_id)
    else:
        query = query.where(R.upload_id == to_upload_id)
    target = session.scalars(query).first()
    if target is None:
        named = f"upload {to_upload_id}" if to_upload_id else "an earlier upload"
        raise NotFoundError(
            f"project {project_id} has no {named} that reached succeeded or confirmed"
        )
    return latest, target


def rollback(
    ctx: Context, project_id: object, to_upload_id: object = None, caller: str | None = None
) -> DistributionRequest:
    """A new request (priority 100) for the upload `choose` picks, for the user of the
    project's latest distributed request; it supersedes the project's queued request."""
    project = validation.hex24("projectId", project_id)
    target_upload = None if to_upload_id is None else validation.hex24("toUploadId", to_upload_id)
    with ctx.sessions() as session:
        latest, target = choose(session, project, target_upload)
    new = distributions.validate(
        ctx, latest.user_id, project, target.upload_id, PRIORITY, created_by=caller or callers.CLI
    )
    values = distributions.new_values(new)
    values["last_message"] = (
        f"rollback from upload {latest.upload_id} (distribution {latest.id}) to upload "
        f"{target.upload_id} (distribution {target.id})"
    )
    return _store_and_publish(ctx, values)


def _store_and_publish(ctx: Context, values: dict[str, object]) -> DistributionRequest:
    user_id = str(values["user_id"])
    with lane_lock(user_id), ctx.sessions.begin() as session:
        conn = session.connection()
        backpressure.check(ctx, user_id, backpressure.count_waiting(conn, user_id))
        old = ctx.ledger.supersede(conn, values)
        if old is not None:
            values["seq"] = old.seq
        ctx.ledger.insert_request(conn, values)
    req = DistributionRequest(**values)
    replaces = lane_member(old.seq, old.id, old.project_id, old.upload_id) if old else None
    distributions.publish(ctx, req, replaces=replaces)
    log.info("rollback %s: %s", req.id, values["last_message"])
    return req
