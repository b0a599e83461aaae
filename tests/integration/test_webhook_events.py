# ruff: noqa: F811  (pytest fixtures imported from a sibling module)
"""Which webhook deliveries act: only an identical payload is a duplicate, and an event
that finds nothing is kept and stops nothing later (SQLite and Postgres)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from tests.integration.test_webhooks import (  # noqa: F401 - the fixture
    AUTO_PROJECT,
    AUTO_USER,
    PROJECT,
    USER,
    ctx,
    enqueue,
    state_of,
    upload,
)
from worker import callers, distributions, webhooks
from worker.context import Context
from worker.models import DistributionRequest, State, WebhookEvent

OTHER_PROJECT = "b" * 24


def deliver(ctx: Context, event: str, up: str, at: str, **extra: Any) -> str | None:
    payload = {
        "event": event,
        "projectId": extra.pop("project", PROJECT),
        "uploadId": up,
        "timestamp": at,
        **extra,
    }  # noqa: E501
    event_id = webhooks.store(ctx, payload)
    return None if event_id is None else webhooks.process(ctx, event_id)


def test_an_event_before_its_request_does_not_swallow_the_real_one(ctx: Context) -> None:
    up = upload()
    early = deliver(ctx, "build.distributing", up, "2026-12-02T05:00:00Z")
    assert early is not None and early.startswith("ignored")
    rid = enqueue(ctx, up, State.SUCCEEDED)
    assert deliver(ctx, "build.distributing", up, "2026-12-02T05:02:00Z") == "confirmed 1"
    assert state_of(ctx, rid).state == State.CONFIRMED


def test_an_event_of_another_project_does_not_swallow_the_real_one(ctx: Context) -> None:
    up = upload()
    rid = enqueue(ctx, up, State.SUCCEEDED)
    other = deliver(ctx, "build.distributing", up, "2026-12-02T05:00:00Z", project=OTHER_PROJECT)
    assert other is not None and other.startswith("ignored")
    assert state_of(ctx, rid).state == State.SUCCEEDED
    assert deliver(ctx, "build.distributing", up, "2026-12-02T05:00:01Z") == "confirmed 1"


def test_each_distribution_gets_its_own_confirmation(ctx: Context) -> None:
    up = upload()
    rids = [enqueue(ctx, up, State.SUCCEEDED) for _ in range(3)]
    for second in range(3):
        assert (
            deliver(ctx, "build.distributing", up, f"2026-12-02T05:0{second}:00Z") == "confirmed 1"
        )
    assert deliver(ctx, "build.distributing", up, "2026-12-02T05:02:00Z") is None  # identical
    assert [state_of(ctx, r).state for r in rids] == [State.CONFIRMED] * 3
    with ctx.sessions() as session:
        assert (
            len(session.scalars(select(WebhookEvent).where(WebhookEvent.upload_id == up)).all())
            == 3
        )


def test_rejected_waits_for_the_call_in_flight(ctx: Context) -> None:
    up = upload()
    flying = enqueue(ctx, up, State.DISPATCHING)
    waiting = enqueue(ctx, up, State.RETRYING)
    assert deliver(ctx, "build.rejected", up, "2026-12-02T05:00:00Z") == webhooks.WAITING_FOR_CALL
    assert state_of(ctx, waiting).state == State.RETRYING  # nothing acted on yet
    distributions_move(ctx, flying, State.RETRYING)  # the call answered "no URL"
    assert webhooks.after_outcome(ctx, up) == 1
    assert {state_of(ctx, r).state for r in (flying, waiting)} == {State.FAILED}


def test_pending_deferred_events_are_taken_by_the_reconciler(ctx: Context) -> None:
    up = upload()
    flying = enqueue(ctx, up, State.DISPATCHING)
    assert (
        deliver(ctx, "build.distributing", up, "2026-12-02T05:00:00Z") == webhooks.WAITING_FOR_CALL
    )
    assert webhooks.process_pending_webhooks(ctx, older_than_s=0) == 1  # still in flight
    distributions_move(ctx, flying, State.SUCCEEDED)  # the worker died after recording
    webhooks.process_pending_webhooks(ctx, older_than_s=0)
    assert state_of(ctx, flying).state == State.CONFIRMED


def test_no_caller_can_take_auto_distributions_key(ctx: Context) -> None:
    up = upload()
    body = distributions.validate(ctx, AUTO_USER, AUTO_PROJECT, up, created_by="ci")
    for key in (f"webhook:{up}:build.approved", "build.approved:1", "build.approved:2"):
        distributions.enqueue_once(ctx, body, key, distributions.body_hash(body))
    with ctx.sessions.begin() as session:  # the caller's requests went through already
        for r in session.scalars(
            select(DistributionRequest).where(DistributionRequest.upload_id == up)
        ):
            r.state = State.FAILED
    result = deliver(ctx, "build.approved", up, "2026-12-02T05:00:00Z", project=AUTO_PROJECT)
    assert result is not None and "auto-distributed as" in result
    with ctx.sessions() as session:
        auto = session.scalars(
            select(DistributionRequest).where(
                DistributionRequest.upload_id == up, DistributionRequest.state == State.QUEUED
            )
        ).one()
    assert auto.created_by == callers.AUTO


def distributions_move(ctx: Context, request_id: str, state: State) -> None:
    with ctx.sessions.begin() as session:
        req = session.get(DistributionRequest, request_id)
        assert req is not None
        req.state = state
