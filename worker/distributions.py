"""Enqueue, cancel and retry distribution requests; SQL first, then the lane in Redis."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from worker import backpressure, callbacks, callers, validation
from worker.context import Context
from worker.errors import (
    ConflictError,
    NotFoundError,
    PacerUnavailable,
    TooManyWaiting,
    ValidationError,
)
from worker.models import PENDING, DistributionRequest, State, new_id, utcnow
from worker.pacer import Placed, lane_member

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewDistribution:
    """A validated request to distribute one upload."""

    user_id: str
    project_id: str
    upload_id: str
    priority: int = 0
    coalesce: bool = True
    created_by: str = callers.CLI
    hold: bool = False  # start `held`, in no lane until released (worker/holds.py)
    callback_url: str | None = None  # changes of state POSTed there (worker/callbacks.py)


def validate(
    ctx: Context,
    user_id: object,
    project_id: object,
    upload_id: object,
    priority: object = 0,
    coalesce: object = True,
    *,
    created_by: str = callers.CLI,
    hold: object = False,
    callback_url: object = None,
) -> NewDistribution:
    """Check ids, priority and coalesce (worker/validation.py) and that the user has a key;
    raises ValidationError naming the field."""
    user = validation.hex24("userId", user_id)
    project = validation.hex24("projectId", project_id)
    upload = validation.hex24("uploadId", upload_id)
    rank = validation.priority(priority)
    replace = validation.flag("coalesce", coalesce)
    held = validation.flag("hold", hold)
    callback = callbacks.check_url(ctx.settings, callback_url)
    if user not in ctx.keyring:
        raise ValidationError("no API key is configured for this userId", field="userId")
    return NewDistribution(user, project, upload, rank, replace, created_by, held, callback)


class LaneEntry(Protocol):
    """What a lane entry is made of: a request, as the ORM or a dispatch read it."""

    @property
    def id(self) -> str: ...
    @property
    def project_id(self) -> str: ...
    @property
    def upload_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def priority(self) -> int: ...


def score(req: LaneEntry) -> int:
    """Lane score: lower goes first, so higher priority first."""
    return -req.priority


def member(req: LaneEntry) -> str:
    """The request's entry in its lane."""
    return lane_member(req.seq, req.id, req.project_id, req.upload_id)


def enqueue(
    ctx: Context,
    new: NewDistribution,
    *,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> DistributionRequest:
    """Store the request (superseding a queued one of the same project), then publish it."""
    return enqueue_placed(ctx, new, idempotency_key=idempotency_key, request_hash=request_hash)[0]


def enqueue_placed(
    ctx: Context,
    new: NewDistribution,
    *,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> tuple[DistributionRequest, Placed | None]:
    """`enqueue`, also giving its place in the lane (None while Redis is unreachable).

    One transaction in SQL, one round trip to Redis (plus the message when the lane is
    idle). published_at stays empty: the reconciler marks rows it finds in their lane.
    """
    values = new_values(new, idempotency_key, request_hash)
    if new.hold:  # no lane, no Redis: a transaction of its own, off the hot path
        from worker import holds  # holds builds on this module

        return holds.enqueue_held(ctx, values, new.coalesce), None
    with ctx.autocommit.connect() as conn:  # Core, cheaper than an ORM unit of work
        old = ctx.ledger.insert(
            conn, values, coalesce=new.coalesce, check_room=lambda c: _check_room(ctx, c, new)
        )
    req, replaced = stored(values, old)
    return req, publish(ctx, req, replaces=replaced)


def _check_room(ctx: Context, conn: Any, new: NewDistribution) -> None:
    """TooManyWaiting when the user's lane holds SPDIST_MAX_WAITING_PER_USER already."""
    backpressure.check(ctx, new.user_id, backpressure.count_waiting(conn, new.user_id))


def new_values(
    new: NewDistribution, idempotency_key: str | None = None, request_hash: str | None = None
) -> dict[str, Any]:
    """The row of a new request."""
    now = utcnow()
    return {
        "id": new_id(),
        "user_id": new.user_id,
        "project_id": new.project_id,
        "upload_id": new.upload_id,
        "priority": new.priority,
        "coalesce": new.coalesce,
        "seq": time.time_ns() // 1000,
        "state": State.QUEUED,
        "created_at": now,
        "updated_at": now,
        "attempt_count": 0,
        "failures": 0,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
        "created_by": new.created_by,
        "callback_url": new.callback_url,
    }


def stored(values: dict[str, Any], old: Any) -> tuple[DistributionRequest, str | None]:
    """The request as stored (in the place of `old`, the request it superseded, if any),
    and the lane member it replaces."""
    if old is not None:
        values["seq"] = old.seq
    replaced = lane_member(old.seq, old.id, old.project_id, old.upload_id) if old else None
    return DistributionRequest(**values), replaced


def publish(ctx: Context, req: DistributionRequest, replaces: str | None = None) -> Placed | None:
    """Put the request in its lane (instead of `replaces`) and wake the lane.

    None when Redis is unreachable: the request waits in SQL for the reconciler (outbox).
    """
    try:
        placed = ctx.pacer.enqueue(req.user_id, member(req), score(req), replaces)
        if placed.wake is not None:
            ctx.send(req.user_id, placed.wake)
    except PacerUnavailable as exc:
        log.warning("request %s stored; publishing waits for Redis: %s", req.id, exc)
        return None
    return placed


def mark_published(ctx: Context, request_ids: list[str]) -> None:
    """Record that these requests are in their lanes (the outbox is done with them)."""
    if request_ids:
        with ctx.sessions.begin() as session:
            session.execute(
                update(DistributionRequest)
                .where(DistributionRequest.id.in_(request_ids))
                .values(published_at=utcnow())
            )


def wake_lane(
    ctx: Context, user_id: str, *, force: bool = False, not_before_us: int | None = None
) -> None:
    """Send a dispatch message for the lane's head unless one is already on its way;
    `not_before_us` first pushes the lane's next slot to at least that."""
    wake = ctx.pacer.wake(user_id, force=force, not_before_us=not_before_us)
    if wake is not None:
        ctx.send(user_id, wake)


def get(session: Session, request_id: str) -> DistributionRequest:
    """One request with its attempts; raises NotFoundError."""
    validation.request_id(request_id)
    req = session.get(
        DistributionRequest, request_id, options=[selectinload(DistributionRequest.attempts)]
    )
    if req is None:
        raise NotFoundError(f"no distribution {request_id}")
    return req


def authorize(ctx: Context, caller: str | None, req: DistributionRequest, action: str) -> None:
    """ForbiddenError unless `caller` made `req` or is an operator (None: the CLI, trusted)."""
    callers.authorize(caller, req.created_by, ctx.settings.operator_names, action)


def cancel(ctx: Context, request_id: str, caller: str | None = None) -> DistributionRequest:
    """Cancel a waiting request; ConflictError once it is no longer waiting."""
    with ctx.sessions.begin() as session:
        req = get(session, request_id)
        authorize(ctx, caller, req, "cancel")
        if not ctx.ledger.transition(
            session, request_id, PENDING, State.CANCELLED, next_attempt_at=None
        ):
            raise ConflictError(f"distribution {request_id} is {req.state}, not waiting")
    try:
        ctx.pacer.remove(req.user_id, member(req))
        wake_lane(ctx, req.user_id)
    except PacerUnavailable as exc:  # a stale lane entry is dropped when it reaches the head
        log.warning("cancelled %s; lane clean-up waits for Redis: %s", request_id, exc)
    return _reload(ctx, request_id)


def retry(ctx: Context, request_id: str, caller: str | None = None) -> DistributionRequest:
    """Put a failed or dead request back at the end of its lane."""
    with ctx.sessions.begin() as session:
        req = get(session, request_id)
        authorize(ctx, caller, req, "retry")
        again: dict[str, Any] = {
            "seq": time.time_ns() // 1000,
            "failures": 0,
            "processing_since": None,
            "next_attempt_at": None,
            "published_at": None,
        }
        if not ctx.ledger.transition(
            session, request_id, (State.FAILED, State.DEAD), State.QUEUED, **again
        ):
            raise ConflictError(f"distribution {request_id} is {req.state}, not failed or dead")
    req = _reload(ctx, request_id)
    publish(ctx, req)
    return req


def _reload(ctx: Context, request_id: str) -> DistributionRequest:
    with ctx.sessions() as session:
        return get(session, request_id)


def body_hash(new: NewDistribution) -> str:
    """sha256 of the canonical (validated, defaults filled in) request body."""
    fields = asdict(new)
    if not new.hold:  # the hash of a body without `hold` stays what it was before it existed
        del fields["hold"]
    if new.callback_url is None:  # nor that of a body without `callbackUrl`
        del fields["callback_url"]
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


MESSAGE_FIELDS = {
    *("userId", "projectId", "uploadId", "priority", "coalesce", "idempotencyKey", "createdBy"),
    "hold",
    "callbackUrl",
}


def enqueue_message(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    """`send_task("spdist.enqueue", kwargs=…)`: the API's validation and record; never raises
    ValidationError or ConflictError but answers `{"error", "field"}`."""
    unknown = sorted(set(body) - MESSAGE_FIELDS)
    try:
        if unknown:
            raise ValidationError(f"unknown field {unknown[0]}", field=unknown[0])
        new = validate(
            ctx,
            body.get("userId", ""),
            body.get("projectId", ""),
            body.get("uploadId", ""),
            body.get("priority", 0),
            body.get("coalesce", True),
            created_by=_task_caller(body),
            hold=body.get("hold", False),
            callback_url=body.get("callbackUrl"),
        )
        key = body.get("idempotencyKey")
        if key is None:
            req = enqueue(ctx, new)
        else:
            key = validation.idempotency_key(key, field="idempotencyKey")
            req, _, _ = enqueue_once(ctx, new, key, body_hash(new))
    except (ValidationError, ConflictError, TooManyWaiting) as exc:
        log.error("spdist.enqueue refused %s: %s", _ids(body), exc)
        return {"error": str(exc), "field": getattr(exc, "field", None)}
    log.info("spdist.enqueue stored %s as %s", _ids(body), req.id)
    return {"id": req.id, "state": str(req.state)}


def _task_caller(body: dict[str, Any]) -> str:
    """The task's `createdBy` (a caller's name), else spdist's own name for the task."""
    name = body.get("createdBy")
    if name is None:
        return callers.TASK
    if not callers.valid_name(name):
        message = "createdBy must be 1-64 of letters, digits, '._-'"
        raise ValidationError(message, field="createdBy")
    return str(name)


def _ids(body: dict[str, Any]) -> str:
    return " ".join(f"{k}={str(body.get(k))[:40]!r}" for k in ("userId", "projectId", "uploadId"))


def find_by_key(
    session: Session, created_by: str, idempotency_key: str
) -> DistributionRequest | None:
    """The request this caller stored under this Idempotency-Key, if any."""
    return session.scalars(
        select(DistributionRequest).where(
            DistributionRequest.created_by == created_by,
            DistributionRequest.idempotency_key == idempotency_key,
        )
    ).first()


def enqueue_once(
    ctx: Context, new: NewDistribution, idempotency_key: str, request_hash: str
) -> tuple[DistributionRequest, bool, Placed | None]:
    """Enqueue unless the key was used: (request, True when it is the earlier one, its
    place in the lane when it is new and Redis took it).

    ConflictError when the key was used for another body. The unique index settles a race
    between two processes: the loser reads the winner's row.
    """
    for _ in range(2):
        with ctx.sessions() as session:
            earlier = find_by_key(session, new.created_by, idempotency_key)
        if earlier is not None:
            if earlier.request_hash != request_hash:
                raise ConflictError("this Idempotency-Key was used with another request body")
            return earlier, True, None
        try:
            req, placed = enqueue_placed(
                ctx, new, idempotency_key=idempotency_key, request_hash=request_hash
            )
            return req, False, placed
        except IntegrityError:
            log.info("Idempotency-Key %r taken by a concurrent request", idempotency_key)
    raise ConflictError("this Idempotency-Key is being used concurrently; try again")
