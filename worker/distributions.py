"""Enqueue, cancel and retry distribution requests; SQL first, then the lane in Redis."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from worker import ledger
from worker.context import Context
from worker.db import autocommit_engine
from worker.errors import ConflictError, NotFoundError, PacerUnavailable, ValidationError
from worker.models import WAITING, DistributionRequest, State, new_id, utcnow
from worker.pacer import Placed, lane_member

log = logging.getLogger(__name__)
HEX24 = re.compile(r"^[0-9a-fA-F]{24}$")


@dataclass(frozen=True)
class NewDistribution:
    """A validated request to distribute one upload."""

    user_id: str
    project_id: str
    upload_id: str
    priority: int = 0
    coalesce: bool = True


def validate(
    ctx: Context,
    user_id: str,
    project_id: str,
    upload_id: str,
    priority: int = 0,
    coalesce: bool = True,
) -> NewDistribution:
    """Check ids and priority and that the user has a key; raises ValidationError."""
    ids = {"userId": user_id, "projectId": project_id, "uploadId": upload_id}
    for name, value in ids.items():
        if not isinstance(value, str) or not HEX24.match(value):
            raise ValidationError(f"{name} must be 24 hexadecimal characters", field=name)
    if isinstance(priority, bool) or not isinstance(priority, int) or not -100 <= priority <= 100:
        raise ValidationError("priority must be an integer from -100 to 100", field="priority")
    if user_id.lower() not in ctx.keyring:
        raise ValidationError("no API key is configured for this userId", field="userId")
    return NewDistribution(
        user_id.lower(), project_id.lower(), upload_id.lower(), priority, bool(coalesce)
    )


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
    engine = autocommit_engine(ctx.sessions.kw["bind"])
    with engine.connect() as conn:  # Core: a third of an ORM unit of work
        if ledger.one_statement(conn):  # one statement, autocommitted: one round trip
            old = None
            if new.coalesce:
                old = ledger.supersede_and_insert(conn, values)
            else:
                ledger.insert_request(conn, values)
        else:
            with conn.begin():
                old = ledger.supersede(conn, values) if new.coalesce else None
                if old is not None:
                    values["seq"] = old.seq
                ledger.insert_request(conn, values)
    req, replaced = stored(values, old)
    return req, publish(ctx, req, replaces=replaced)


def new_values(
    new: NewDistribution, idempotency_key: str | None = None, request_hash: str | None = None
) -> dict[str, Any]:
    """The row of a new request."""
    now = utcnow()
    return {
        "id": new_id(), "user_id": new.user_id, "project_id": new.project_id,
        "upload_id": new.upload_id, "priority": new.priority, "coalesce": new.coalesce,
        "seq": time.time_ns() // 1000, "state": State.QUEUED, "created_at": now,
        "updated_at": now, "attempt_count": 0, "failures": 0,
        "idempotency_key": idempotency_key, "request_hash": request_hash,
    }  # fmt: skip


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
            ctx.publish(req.user_id, placed.wake)
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


def kick(
    ctx: Context, user_id: str, *, force: bool = False, not_before_us: int | None = None
) -> None:
    """Send a dispatch message for the lane's head unless one is already on its way;
    `not_before_us` first pushes the lane's next slot to at least that."""
    wake = ctx.pacer.wake(user_id, force=force, not_before_us=not_before_us)
    if wake is not None:
        ctx.publish(user_id, wake)


def get(session: Session, request_id: str) -> DistributionRequest:
    """One request with its attempts; raises NotFoundError."""
    req = session.get(
        DistributionRequest, request_id, options=[selectinload(DistributionRequest.attempts)]
    )
    if req is None:
        raise NotFoundError(f"no distribution {request_id}")
    return req


def cancel(ctx: Context, request_id: str) -> DistributionRequest:
    """Cancel a waiting request; ConflictError once it is no longer waiting."""
    with ctx.sessions.begin() as session:
        req = get(session, request_id)
        done = session.execute(
            update(DistributionRequest)
            .where(DistributionRequest.id == request_id, DistributionRequest.state.in_(WAITING))
            .values(state=State.CANCELLED, next_attempt_at=None, updated_at=utcnow())
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise ConflictError(f"distribution {request_id} is {req.state}, not waiting")
    try:
        ctx.pacer.remove(req.user_id, member(req))
        kick(ctx, req.user_id)
    except PacerUnavailable as exc:  # a stale lane entry is dropped when it reaches the head
        log.warning("cancelled %s; lane clean-up waits for Redis: %s", request_id, exc)
    return _reload(ctx, request_id)


def retry(ctx: Context, request_id: str) -> DistributionRequest:
    """Put a failed or dead request back at the end of its lane."""
    with ctx.sessions.begin() as session:
        req = get(session, request_id)
        done = session.execute(
            update(DistributionRequest)
            .where(
                DistributionRequest.id == request_id,
                DistributionRequest.state.in_((State.FAILED, State.DEAD)),
            )
            .values(
                state=State.QUEUED,
                seq=time.time_ns() // 1000,
                failures=0,
                processing_since=None,
                next_attempt_at=None,
                published_at=None,
                updated_at=utcnow(),
            )
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise ConflictError(f"distribution {request_id} is {req.state}, not failed or dead")
    req = _reload(ctx, request_id)
    publish(ctx, req)
    return req


def _reload(ctx: Context, request_id: str) -> DistributionRequest:
    with ctx.sessions() as session:
        return get(session, request_id)


def body_hash(new: NewDistribution) -> str:
    """sha256 of the canonical (validated, defaults filled in) request body."""
    canonical = json.dumps(asdict(new), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


MESSAGE_FIELDS = {"userId", "projectId", "uploadId", "priority", "coalesce", "idempotencyKey"}


def enqueue_message(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    """`send_task("spdist.enqueue", kwargs=…)`: the API's validation and record; never raises
    ValidationError or ConflictError but answers `{"error", "field"}`."""
    unknown = sorted(set(body) - MESSAGE_FIELDS)
    try:
        if unknown:
            raise ValidationError(f"unknown field {unknown[0]}", field=unknown[0])
        new = validate(ctx, body.get("userId", ""), body.get("projectId", ""),
                       body.get("uploadId", ""), body.get("priority", 0),
                       body.get("coalesce", True))  # fmt: skip
        key = body.get("idempotencyKey")
        if key is None:
            req = enqueue(ctx, new)
        else:
            req, _, _ = enqueue_once(ctx, new, str(key), body_hash(new))
    except (ValidationError, ConflictError) as exc:
        log.error("spdist.enqueue refused %s: %s", _ids(body), exc)
        return {"error": str(exc), "field": getattr(exc, "field", None)}
    log.info("spdist.enqueue stored %s as %s", _ids(body), req.id)
    return {"id": req.id, "state": str(req.state)}


def _ids(body: dict[str, Any]) -> str:
    return " ".join(f"{k}={body.get(k)!r}" for k in ("userId", "projectId", "uploadId"))


def find_by_key(session: Session, idempotency_key: str) -> DistributionRequest | None:
    """The request stored under this Idempotency-Key, if any."""
    return session.scalars(
        select(DistributionRequest).where(DistributionRequest.idempotency_key == idempotency_key)
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
            earlier = find_by_key(session, idempotency_key)
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
