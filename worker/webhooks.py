"""Streampixel webhooks: store the raw event first, act on it later, once.

    store (API, before answering 204)  ->  send_event (a `spdist.webhook` task)
    ->  process (worker): act, then mark processed
        (a call for the upload in flight: wait, and act once its outcome is recorded)

Only an identical payload is a duplicate. An event that finds nothing to act on is kept,
marked processed ("ignored: ..."), and stops nothing that comes later. Every action is a
conditional update; `build.distributing` confirms one request in the transaction that marks
the event, and auto-distribution enqueues under an idempotency key of its own, so
processing an event twice (the task, the reconciler and a dispatch's `after_outcome`
racing) changes nothing the second time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker import callers, distributions
from worker.context import Context
from worker.errors import ConflictError, PacerUnavailable, TooManyWaiting, ValidationError
from worker.models import PENDING, DistributionRequest, State, WebhookEvent, utcnow

log = logging.getLogger(__name__)
ACTIVE = (*PENDING, State.DISPATCHING, State.SUCCEEDED, State.CONFIRMED)


def store(ctx: Context, payload: dict[str, Any]) -> int | None:
    """Insert the raw event; its id, or None when this very payload was stored before.

    Streampixel sends no event id and never retries, so only an identical delivery is a
    duplicate: the same upload distributed twice sends two `build.distributing` events
    (their timestamps differ), and both must act."""
    event = str(payload["event"])
    upload_id = _lower(payload.get("uploadId"))
    row = WebhookEvent(
        event=event,
        project_id=_lower(payload.get("projectId")),
        upload_id=upload_id,
        status=payload.get("status"),
        payload=payload,
        dedupe_key=payload_digest(payload),
    )
    try:
        with ctx.sessions.begin() as session:
            session.add(row)
            session.flush()
            return row.id
    except IntegrityError:
        log.info("webhook %s for upload %s: the same delivery again", event, upload_id)
        return None


def payload_digest(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a payload: what makes two deliveries the same."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _lower(value: object) -> str | None:
    return value.lower() if isinstance(value, str) else None


def send_event(event_id: int, event: str, upload_id: str | None, project_id: str | None) -> None:
    """Send the `spdist.webhook` task; if the broker is down the reconciler picks it up."""
    from worker.celery_app import QUEUE, app

    kwargs = {
        "event_id": event_id,
        "event": event,
        "upload_id": upload_id or "",
        "project_id": project_id or "",
    }
    try:
        app.send_task("spdist.webhook", kwargs=kwargs, queue=QUEUE)
    except Exception as exc:  # kombu and redis errors alike; SQL holds the event
        log.warning("webhook event %d stored; processing waits for the broker: %s", event_id, exc)


def process(ctx: Context, event_id: int) -> str:
    """Act on a stored event unless already done; returns what was done.

    While a call for its upload is being made the event waits (unprocessed): the call's
    outcome decides what it means, so it is acted on once that outcome is recorded
    (`after_outcome`, else the reconciler's `process_pending_webhooks`)."""
    with ctx.sessions() as session:
        ev = session.get(WebhookEvent, event_id)
    if ev is None:
        return "unknown event"
    if ev.processed_at is not None:
        return ev.result or "done"
    if ev.event in ACTIONS and ev.upload_id and _in_flight(ctx, ev):
        _note(ctx, event_id, WAITING_FOR_CALL)
        return WAITING_FOR_CALL
    if ev.event == "build.distributing":
        result = _distributing(ctx, ev)  # marks the event itself, in its transaction
    else:
        result = ACTIONS.get(ev.event, _ignore)(ctx, ev)
        _mark(ctx, event_id, result)
    log.info("webhook %s (event %d, upload %s): %s", ev.event, event_id, ev.upload_id, result)
    return result


WAITING_FOR_CALL = "waiting: a call for this upload is being made"


def _in_flight(ctx: Context, ev: WebhookEvent) -> bool:
    with ctx.sessions() as session:
        return (
            session.scalars(
                select(DistributionRequest.id)
                .where(*_for_upload(ev), DistributionRequest.state == State.DISPATCHING)
                .limit(1)
            ).first()
            is not None
        )


def _note(ctx: Context, event_id: int, result: str) -> None:
    with ctx.sessions.begin() as session:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id, WebhookEvent.processed_at.is_(None))
            .values(result=result)
        )


def _mark(ctx: Context, event_id: int, result: str) -> None:
    with ctx.sessions.begin() as session:
        _claim(session, event_id, result)


def _claim(session: Session, event_id: int, result: str | None) -> bool:
    """Mark the event processed unless someone has; whether this session did."""
    done = session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.processed_at.is_(None))
        .values(processed_at=utcnow(), result=result)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def after_outcome(ctx: Context, upload_id: str) -> int:
    """A call's outcome is recorded: act on the events of its upload that waited for it.

    Never raises (the dispatch that calls it has done its work); the reconciler retries."""
    try:
        with ctx.sessions() as session:
            ids = session.scalars(
                select(WebhookEvent.id)
                .where(WebhookEvent.processed_at.is_(None), WebhookEvent.upload_id == upload_id)
                .order_by(WebhookEvent.id)
            ).all()
        for event_id in ids:
            process(ctx, event_id)
        return len(ids)
    except Exception as exc:  # noqa: BLE001 - the reconciler processes what is left
        log.warning("webhook events of upload %s wait for the reconciler: %s", upload_id, exc)
        return 0


def process_pending_webhooks(ctx: Context, *, older_than_s: float = 5.0, limit: int = 100) -> int:
    """Events stored but not acted on (the broker was down): process them now."""
    horizon = utcnow() - timedelta(seconds=older_than_s)
    with ctx.sessions() as session:
        ids = session.scalars(
            select(WebhookEvent.id)
            .where(WebhookEvent.processed_at.is_(None), WebhookEvent.received_at <= horizon)
            .order_by(WebhookEvent.id)
            .limit(limit)
        ).all()
    for event_id in ids:
        process(ctx, event_id)
    return len(ids)


def _ignore(ctx: Context, ev: WebhookEvent) -> str:
    return "test event" if ev.event == "webhook.test" else "ignored"


def _for_upload(ev: WebhookEvent) -> Any:
    cond = [DistributionRequest.upload_id == ev.upload_id]
    if ev.project_id:
        cond.append(DistributionRequest.project_id == ev.project_id)
    return cond


def _distributing(ctx: Context, ev: WebhookEvent) -> str:
    """build.distributing: one rollout started; the oldest `succeeded` request of the upload
    is `confirmed` (each distribution of an upload has its own event)."""
    with ctx.sessions.begin() as session:
        if not _claim(session, ev.id, None):
            return "processed elsewhere"
        result = "ignored: no request of this upload awaits confirmation"
        if ev.upload_id:
            confirmed = _confirm_one(ctx, session, ev)
            result = "confirmed 1" if confirmed else result
            if confirmed:
                log.info("webhook event %d confirmed request %s", ev.id, confirmed)
        session.execute(update(WebhookEvent).where(WebhookEvent.id == ev.id).values(result=result))
    return result


def _confirm_one(ctx: Context, session: Session, ev: WebhookEvent) -> str | None:
    """Confirm the oldest succeeded request; another event taking it first means the next."""
    for _ in range(5):
        target = session.scalars(
            select(DistributionRequest.id)
            .where(*_for_upload(ev), DistributionRequest.state == State.SUCCEEDED)
            .order_by(DistributionRequest.dispatched_at, DistributionRequest.id)
            .limit(1)
        ).first()
        if target is None:
            return None
        if ctx.ledger.transition(session, target, State.SUCCEEDED, State.CONFIRMED):
            return str(target)
    return None


def _approved(ctx: Context, ev: WebhookEvent) -> str:
    """build.approved: the build has its URL; requests waiting on it go at the next slot."""
    if not ev.upload_id:
        return "ignored: no uploadId"
    moved = _bring_forward(ctx, ev)
    return f"brought forward {moved}; {_auto_distribute(ctx, ev)}"


def _bring_forward(ctx: Context, ev: WebhookEvent) -> int:
    waiting_on_url = (DistributionRequest.processing_since.is_not(None),)
    with ctx.sessions.begin() as session:
        rows = session.scalars(
            select(DistributionRequest).where(
                *_for_upload(ev), DistributionRequest.state == State.RETRYING, *waiting_on_url
            )
        ).all()
        moved = [
            r
            for r in rows
            if ctx.ledger.transition(
                session,
                r.id,
                State.RETRYING,
                State.RETRYING,
                only_if=waiting_on_url,
                next_attempt_at=utcnow(),
            )
        ]
    for req in moved:
        _requeue(ctx, req)
    return len(moved)


def _requeue(ctx: Context, req: DistributionRequest) -> None:
    try:
        ctx.pacer.add(req.user_id, [(distributions.member(req), distributions.score(req))])
        distributions.wake_lane(ctx, req.user_id)
    except PacerUnavailable as exc:  # next_attempt_at is now: the reconciler requeues it
        log.warning("request %s brought forward; its lane waits for Redis: %s", req.id, exc)


def _auto_distribute(ctx: Context, ev: WebhookEvent) -> str:
    """SPDIST_AUTO_DISTRIBUTE: enqueue an approved build unless a request for it exists."""
    user_id = ctx.settings.auto_distribute.get(ev.project_id or "")
    if user_id is None:
        return "no auto-distribution"
    with ctx.sessions() as session:
        existing = session.scalars(
            select(DistributionRequest.id)
            .where(*_for_upload(ev), DistributionRequest.state.in_(ACTIVE))
            .limit(1)
        ).first()
    if existing is not None:
        return f"auto-distribution not needed ({existing} exists)"
    try:
        # Under spdist's own caller name (a `:` no token's name holds): no caller can take
        # this key in advance, nor see the request as its own.
        project, upload = ev.project_id or "", ev.upload_id or ""
        hold = project in ctx.settings.hold_project_ids  # SPDIST_HOLD_PROJECTS: wait for a release
        callback = ctx.settings.auto_callback_url  # SPDIST_AUTO_CALLBACK_URL, checked as any
        new = distributions.validate(
            ctx, user_id, project, upload, created_by=callers.AUTO, hold=hold, callback_url=callback
        )
        key = f"build.approved:{ev.id}"
        req, _, _ = distributions.enqueue_once(ctx, new, key, distributions.body_hash(new))
    except (ValidationError, ConflictError, TooManyWaiting) as exc:
        log.error("auto-distribution of upload %s refused: %s", ev.upload_id, exc)
        return f"auto-distribution refused: {exc}"
    return f"auto-distributed as {req.id}"


def _rejected(ctx: Context, ev: WebhookEvent) -> str:
    """build.rejected: nothing more will come for this build; its waiting requests fail, and
    so does one whose call was in flight when the event came (its outcome is recorded by
    now: `process` waited for it), whatever Streampixel answered that call."""
    if not ev.upload_id:
        return "ignored: no uploadId"
    objection = (ev.payload or {}).get("objection") or "no objection given"
    message = f"build rejected by Streampixel: {objection}"[:500]
    in_flight = (DistributionRequest.state == State.SUCCEEDED) & (
        DistributionRequest.updated_at >= ev.received_at
    )
    with ctx.sessions.begin() as session:
        rows = session.scalars(
            select(DistributionRequest).where(
                *_for_upload(ev), DistributionRequest.state.in_(PENDING) | in_flight
            )
        ).all()
        failed = [
            r
            for r in rows
            if ctx.ledger.transition(
                session,
                r.id,
                State(r.state),
                State.FAILED,
                last_message=message,
                next_attempt_at=None,
            )
        ]
    for req in failed:
        _drop(ctx, req)
    return f"failed {len(failed)}"


def _drop(ctx: Context, req: DistributionRequest) -> None:
    try:
        ctx.pacer.remove(req.user_id, distributions.member(req))
        distributions.wake_lane(ctx, req.user_id)
    except PacerUnavailable as exc:  # a stale lane entry is dropped when it reaches the head
        log.warning("request %s failed; lane clean-up waits for Redis: %s", req.id, exc)


ACTIONS: dict[str, Callable[[Context, WebhookEvent], str]] = {
    "build.distributing": _distributing,
    "build.approved": _approved,
    "build.rejected": _rejected,
}
