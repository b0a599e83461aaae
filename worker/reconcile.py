"""The reconciler: finds work SQL says is due but no live message carries, and sends it.

Run by `spdist beat` every SPDIST_RECONCILE_EVERY_S. Each step reads through an index
and touches only due rows; every write is conditional, so two schedulers started by
mistake cost duplicate messages, never a duplicate call (the pacer and the claim see
to that).
"""

from __future__ import annotations

import logging
from collections import Counter

from sqlalchemy import select, update

from worker import outcomes
from worker.context import Context
from worker.distributions import kick, member, publish, score
from worker.errors import Outcome, PacerUnavailable
from worker.models import WAITING, DistributionAttempt, DistributionRequest, State, utcnow

log = logging.getLogger(__name__)
BATCH = 1000


def reconcile(ctx: Context) -> dict[str, int]:
    """One pass; returns counts of what it did."""
    counts: Counter[str] = Counter()
    counts["leases_expired"] = expire_leases(ctx)
    try:
        counts["published"] = publish_outbox(ctx)
        counts["requeued"] = requeue_due(ctx)
        counts["lanes_woken"] = wake_lanes(ctx)
    except PacerUnavailable as exc:
        log.warning("reconciler paused: %s", exc)
        counts["redis_errors"] += 1
    return dict(counts)


def expire_leases(ctx: Context) -> int:
    """A claim whose lease ran out: its attempt becomes `unknown`, the request retries."""
    now = utcnow()
    with ctx.sessions() as session:
        rows = session.scalars(
            select(DistributionRequest)
            .where(
                DistributionRequest.state == State.DISPATCHING,
                DistributionRequest.lease_expires_at < now,
            )
            .limit(BATCH)
        ).all()
    return sum(_expire(ctx, req) for req in rows)


def _expire(ctx: Context, req: DistributionRequest) -> int:
    message = "the worker died or lost its lease after sending; outcome never read"
    values = outcomes.transient(ctx.settings, req.failures, message)
    with ctx.sessions.begin() as session:
        done = session.execute(
            update(DistributionRequest)
            .where(
                DistributionRequest.id == req.id,
                DistributionRequest.state == State.DISPATCHING,
                DistributionRequest.attempt_count == req.attempt_count,
            )
            .values(lease_expires_at=None, updated_at=utcnow(), **values)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
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
    """Requests stored while Redis was unreachable."""
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
    return sum(publish(ctx, req) for req in rows)


def requeue_due(ctx: Context) -> int:
    """`retrying` requests past their next_attempt_at go back in line."""
    now = utcnow()
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
        kick(ctx, req.user_id)
    return len(rows)


def wake_lanes(ctx: Context) -> int:
    """Lanes with waiting work and no dispatch message in flight (lost, expired, flushed)."""
    with ctx.sessions() as session:
        users = session.scalars(
            select(DistributionRequest.user_id)
            .where(DistributionRequest.state == State.QUEUED)
            .distinct()
        ).all()
    woken = 0
    for user_id in users:
        if not ctx.pacer.members(user_id):
            _refill(ctx, user_id)
        wake = ctx.pacer.wake(user_id)
        if wake is not None:
            ctx.publish(user_id, wake)
            woken += 1
    return woken


def _refill(ctx: Context, user_id: str) -> None:
    with ctx.sessions() as session:
        rows = session.scalars(
            select(DistributionRequest).where(
                DistributionRequest.user_id == user_id,
                DistributionRequest.state.in_(WAITING),
                DistributionRequest.next_attempt_at.is_(None),
            )
        ).all()
    ctx.pacer.add(user_id, [(member(r), score(r)) for r in rows])
