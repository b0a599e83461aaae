"""The reconciler: finds work SQL says is due but no live message carries, and sends it.

Run by `spdist beat` every SPDIST_RECONCILE_EVERY_S (the pass itself runs on a worker).
It closes the holes of Celery on Redis from the system of record:

    expire_leases    a claim whose worker died or hung: its attempt becomes `unknown`
    wake_lanes       lanes with a waiting head but no dispatch message in flight
                     (message lost, its worker killed, Redis flushed or restarted)
    publish_outbox   requests stored while Redis was unreachable
    requeue_due      `retrying` requests past their next_attempt_at go back in line

Every step reads through an index and touches only due rows; lanes are checked in one
script call (idle.lua) and only those without a wake marker run a script. Every write is
conditional, so two schedulers started by mistake cost duplicate messages, never a
duplicate call (the pacer's holder and the claim's fencing see to that). Times are read
on the Redis clock, the one the pacer and the leases use, so a worker whose own clock is
off never expires a live lease nor requeues early.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from worker import outcomes, webhooks
from worker.context import Context
from worker.distributions import mark_published, member, publish, score, wake_lane
from worker.errors import Outcome, PacerUnavailable
from worker.models import WAITING, DistributionAttempt, DistributionRequest, State, utcnow

log = logging.getLogger(__name__)
BATCH = 1000
T = TypeVar("T")


def reconcile(ctx: Context) -> dict[str, int]:
    """One pass; returns counts of what it did."""
    counts: Counter[str] = Counter()
    try:
        now = outcomes.from_us(ctx.pacer.now_us())
        counts["leases_expired"] = expire_leases(ctx, now)
        # Lanes first: a lane Redis lost is refilled from SQL only while it is empty, and
        # the outbox and the requeue would each put a few requests back in it (the newest,
        # or a retry), so it would pass for intact and run those before the older ones.
        counts["lanes_woken"] = wake_lanes(ctx)
        counts["published"] = publish_outbox(ctx)
        counts["requeued"] = requeue_due(ctx, now)
    except PacerUnavailable as exc:
        log.warning("reconciler paused: %s", exc)
        counts["redis_errors"] += 1
    counts["webhooks"] = _pending_webhooks(ctx)
    return dict(counts)


def expire_leases(ctx: Context, now: datetime | None = None) -> int:
    """A claim whose lease ran out: its attempt becomes `unknown`, the request retries."""
    now = now or utcnow()
    with ctx.sessions() as session:
        rows = session.scalars(
            select(DistributionRequest)
            .where(
                DistributionRequest.state == State.DISPATCHING,
                DistributionRequest.lease_expires_at < now,
            )
            .limit(BATCH)
        ).all()
    return sum(_expire(ctx, req, now) for req in rows)


def _expire(ctx: Context, req: DistributionRequest, now: datetime) -> int:
    message = "the worker died or lost its lease after sending; outcome never read"
    values = outcomes.transient(ctx.settings, req.failures, message, now)
    with ctx.sessions.begin() as session:
        state = values.pop("state")
        if not ctx.ledger.transition(
            session,
            req.id,
            State.DISPATCHING,
            state,
            only_if=(DistributionRequest.attempt_count == req.attempt_count,),
            lease_expires_at=None,
            **values,
        ):
            return 0
        session.execute(
            update(DistributionAttempt)
            .where(
                DistributionAttempt.request_id == req.id,
                DistributionAttempt.number == req.attempt_count,
                DistributionAttempt.outcome.is_(None),
            )
            .values(outcome=Outcome.UNKNOWN, finished_at=utcnow(), message=message)
        )
    log.warning("lease of %s attempt %d expired: outcome unknown", req.id, req.attempt_count)
    return 1


def publish_outbox(ctx: Context) -> int:
    """Queued requests not yet marked published: put (back) in their lanes, then marked.

    Enqueue leaves published_at empty to keep its own path short; re-adding a request that
    is already in its lane changes nothing, so this also covers requests stored while Redis
    was unreachable and those whose enqueuing process died before reaching Redis.
    """
    with ctx.sessions() as session:
        rows = session.scalars(
            select(DistributionRequest)
            .where(
                DistributionRequest.published_at.is_(None),
                DistributionRequest.state == State.QUEUED,
            )
            .order_by(DistributionRequest.seq)
            .limit(BATCH)
        ).all()
    done = [req.id for req in rows if publish(ctx, req) is not None]
    mark_published(ctx, done)
    return len(done)


def requeue_due(ctx: Context, now: datetime | None = None) -> int:
    """`retrying` requests past their next_attempt_at go back in line."""
    now = now or utcnow()
    with ctx.sessions() as session:
        rows = session.scalars(
            select(DistributionRequest)
            .where(
                DistributionRequest.state == State.RETRYING,
                DistributionRequest.next_attempt_at <= now,
            )
            .limit(BATCH)
        ).all()
    for req in rows:
        ctx.pacer.add(req.user_id, [(member(req), score(req))])
    for user_id in {req.user_id for req in rows}:
        wake_lane(ctx, user_id)
    return len(rows)


def wake_lanes(ctx: Context) -> int:
    """Lanes with waiting work and no dispatch message in flight (lost, expired, flushed)."""
    woken = 0
    for users in _chunks(_lanes_with_work(ctx), BATCH):
        idle = ctx.pacer.idle_lanes(users)
        _refill(ctx, [user_id for user_id, empty in idle if empty])
        for user_id, _ in idle:
            wake = ctx.pacer.wake(user_id)
            if wake is not None:
                ctx.send(user_id, wake)
                woken += 1
    return woken


def _lanes_with_work(ctx: Context) -> Sequence[str]:
    """Users with a queued request: an index-only read of ix_requests_state_user."""
    with ctx.sessions() as session:
        return session.scalars(
            select(DistributionRequest.user_id)
            .where(DistributionRequest.state == State.QUEUED)
            .distinct()
        ).all()


def _refill(ctx: Context, user_ids: Sequence[str]) -> None:
    """Lanes that Redis lost (restarted empty, flushed): put their waiting requests back.

    Streamed, BATCH rows at a time, and only the columns a lane entry is made of: a pass
    that refills large lanes held them all as ORM objects and left the pool process that
    ran it larger for good (BENCHMARKS.md, design measurements)."""
    if not user_ids:
        return
    R = DistributionRequest
    query = (
        select(R.user_id, R.id, R.seq, R.project_id, R.upload_id, R.priority)
        .where(R.user_id.in_(user_ids), R.state.in_(WAITING), R.next_attempt_at.is_(None))
        .execution_options(yield_per=BATCH)
    )
    with ctx.sessions() as session:
        for chunk in session.execute(query).partitions():
            by_user: dict[str, list[tuple[str, int]]] = {}
            for r in chunk:
                by_user.setdefault(r.user_id, []).append((member(r), score(r)))
            for user_id, entries in by_user.items():
                ctx.pacer.add(user_id, entries)


def _pending_webhooks(ctx: Context) -> int:
    """Webhook events stored but not acted on (their message was lost)."""
    try:
        return webhooks.process_pending_webhooks(ctx)
    except (SQLAlchemyError, PacerUnavailable) as exc:
        log.warning("pending webhooks not processed: %s", exc)
        return 0


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
