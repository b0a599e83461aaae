"""The reconciler's lease expiry on both databases: an attempt whose worker died becomes
`unknown` and the request retries; a claim that moved on since the reconciler read it is left."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.integration.test_api import close, make_ctx
from worker import distributions, reconcile
from worker.context import Context
from worker.errors import Outcome
from worker.models import DistributionAttempt, DistributionRequest, State, utcnow

pytestmark = pytest.mark.integration
USER, PROJECT = uuid.uuid4().hex[:24], "a" * 24


@pytest.fixture
def ctx(db_url: str, redis_url: str) -> Iterator[Context]:
    c = make_ctx(db_url, redis_url, [], api_keys={USER: "sk-lease"})
    yield c
    close(c)


def _dispatching(ctx: Context, attempts: int) -> str:
    """A request claimed `attempts` times, the last attempt open and its lease run out."""
    req = distributions.enqueue(ctx, distributions.validate(ctx, USER, PROJECT, "b" * 24))
    with ctx.sessions.begin() as session:
        session.execute(
            update(DistributionRequest)
            .where(DistributionRequest.id == req.id)
            .values(
                state=State.DISPATCHING,
                attempt_count=attempts,
                lease_expires_at=utcnow() - timedelta(seconds=1),
            )
        )
        for number in range(1, attempts + 1):
            session.add(_attempt(req.id, number))
    return req.id


def _attempt(request_id: str, number: int) -> DistributionAttempt:
    return DistributionAttempt(
        request_id=request_id, number=number, user_id=USER, slot_us=1, lane_free_us=1
    )


def _state(ctx: Context, request_id: str) -> tuple[Any, ...]:
    with ctx.sessions() as session:
        req = session.get_one(DistributionRequest, request_id)
        outcomes = session.scalars(
            select(DistributionAttempt.outcome)
            .where(DistributionAttempt.request_id == request_id)
            .order_by(DistributionAttempt.number)
        ).all()
        return req.state, req.attempt_count, req.lease_expires_at, list(outcomes)


def test_an_expired_lease_makes_the_attempt_unknown_and_the_request_retry(ctx: Context) -> None:
    rid = _dispatching(ctx, 1)
    assert reconcile.expire_leases(ctx) == 1
    assert _state(ctx, rid) == (State.RETRYING, 1, None, [Outcome.UNKNOWN])
    assert reconcile.expire_leases(ctx) == 0  # once


def test_a_claim_that_moved_on_since_the_read_is_left_alone(ctx: Context) -> None:
    rid = _dispatching(ctx, 1)
    with ctx.sessions() as session:  # what the reconciler read
        seen = session.get_one(DistributionRequest, rid)
        session.expunge(seen)
    # Meanwhile attempt 1 was recorded and another worker claimed attempt 2, still leased.
    with ctx.sessions.begin() as session:
        session.execute(
            update(DistributionAttempt)
            .where(DistributionAttempt.request_id == rid)
            .values(outcome=Outcome.SERVER_ERROR, finished_at=utcnow())
        )
        session.execute(
            update(DistributionRequest)
            .where(DistributionRequest.id == rid)
            .values(attempt_count=2, lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        session.add(_attempt(rid, 2))
    assert reconcile._expire(ctx, seen, utcnow()) == 0  # the fence: attempt 1 is not attempt 2
    state, count, lease, outcomes = _state(ctx, rid)
    assert (state, count, outcomes) == (State.DISPATCHING, 2, [Outcome.SERVER_ERROR, None])
    assert lease is not None
