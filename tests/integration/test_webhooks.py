"""Streampixel webhooks against real Redis and Postgres: stored once, acted on once."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from tests.integration.test_api import TOKEN, close, make_ctx, start_api
from worker import distributions, webhooks
from worker.context import Context
from worker.dev.procs import spdist_env, start_worker, wait_for
from worker.models import DistributionRequest, State, WebhookEvent, utcnow

pytestmark = pytest.mark.integration
USER = uuid.uuid4().hex[:24]
AUTO_USER = uuid.uuid4().hex[:24]
PROJECT, AUTO_PROJECT = "a" * 24, "e" * 24


def upload() -> str:
    return uuid.uuid4().hex[:24]


@pytest.fixture
def ctx(db_url: str, redis_url: str) -> Any:
    sent: list[Any] = []
    c = make_ctx(
        db_url,
        redis_url,
        sent,
        api_keys={USER: "sk-hook-1", AUTO_USER: "sk-hook-2"},
        auto_distribute={AUTO_PROJECT: AUTO_USER},
    )
    c.sent = sent  # type: ignore[attr-defined]
    yield c
    close(c)


def enqueue(ctx: Context, up: str, state: State | None = None, **values: Any) -> str:
    req = distributions.enqueue(ctx, distributions.validate(ctx, USER, PROJECT, up))
    if state is not None:
        with ctx.sessions.begin() as session:
            session.execute(
                update(DistributionRequest)
                .where(DistributionRequest.id == req.id)
                .values(state=state, **values)
            )
    return req.id


def deliver(ctx: Context, event: str, up: str | None, **extra: Any) -> str | None:
    payload = {"event": event, "projectId": extra.pop("project", PROJECT), "uploadId": up, **extra}
    event_id = webhooks.store(ctx, payload)
    return None if event_id is None else webhooks.process(ctx, event_id)


def state_of(ctx: Context, request_id: str) -> DistributionRequest:
    with ctx.sessions() as session:
        return distributions.get(session, request_id)


def test_distributing_confirms_once(ctx: Context) -> None:
    up = upload()
    rid = enqueue(ctx, up, State.SUCCEEDED)
    assert deliver(ctx, "build.distributing", up) == "confirmed 1"
    assert deliver(ctx, "build.distributing", up) is None  # duplicate: stored once, no action
    assert state_of(ctx, rid).state == State.CONFIRMED
    with ctx.sessions() as session:
        assert len(session.scalars(select(WebhookEvent)).all()) == 1


def test_approved_brings_a_processing_request_forward(ctx: Context) -> None:
    up = upload()
    later = utcnow() + timedelta(minutes=10)
    rid = enqueue(ctx, up, State.RETRYING, next_attempt_at=later, processing_since=utcnow())
    ctx.pacer.remove(USER, distributions.member(state_of(ctx, rid)))
    before = len(ctx.sent)  # type: ignore[attr-defined]
    assert deliver(ctx, "build.approved", up).startswith("brought forward 1")  # type: ignore[union-attr]
    req = state_of(ctx, rid)
    assert req.next_attempt_at is not None and req.next_attempt_at <= utcnow()
    assert any(rid in m for m in ctx.pacer.members(USER))
    assert len(ctx.sent) >= before  # type: ignore[attr-defined]


def test_rejected_fails_waiting_requests_with_the_objection(ctx: Context) -> None:
    up = upload()
    rid = enqueue(ctx, up)
    assert deliver(ctx, "build.rejected", up, objection="crashes on start") == "failed 1"
    req = state_of(ctx, rid)
    assert req.state == State.FAILED and "crashes on start" in (req.last_message or "")
    assert not any(rid in m for m in ctx.pacer.members(USER))


def test_auto_distribution_on_approval(ctx: Context) -> None:
    up = upload()
    result = deliver(ctx, "build.approved", up, project=AUTO_PROJECT)
    assert result and "auto-distributed as" in result
    with ctx.sessions() as session:
        rows = session.scalars(
            select(DistributionRequest).where(DistributionRequest.upload_id == up)
        ).all()
    assert [(r.user_id, r.project_id, r.state) for r in rows] == [
        (AUTO_USER, AUTO_PROJECT, State.QUEUED)
    ]
    other = deliver(ctx, "build.approved", upload(), project="f" * 24)
    assert other is not None and "no auto-distribution" in other


def test_unknown_and_test_events_are_stored_and_ignored(ctx: Context) -> None:
    assert deliver(ctx, "build.extracting", upload()) == "ignored"
    assert deliver(ctx, "webhook.test", None) == "test event"
    assert deliver(ctx, "webhook.test", None) is None  # the identical delivery: stored once
    assert deliver(ctx, "webhook.test", None, timestamp="2026-12-02T05:00:00Z") == "test event"


def test_pending_events_are_processed_later(ctx: Context) -> None:
    """The broker was down when the event came: the reconciler's pass acts on it."""
    up = upload()
    rid = enqueue(ctx, up, State.SUCCEEDED)
    event_id = webhooks.store(ctx, {"event": "build.distributing", "uploadId": up})
    assert event_id is not None
    assert webhooks.process_pending_webhooks(ctx, older_than_s=0) == 1
    assert state_of(ctx, rid).state == State.CONFIRMED
    assert webhooks.process_pending_webhooks(ctx, older_than_s=0) == 0


def test_webhook_through_the_api_and_a_worker(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    """The route answers 204 at once; the worker's spdist.webhook task confirms."""
    keys = {USER: "sk-hook-1"}
    env = spdist_env(
        pg_url,
        redis_url,
        "http://127.0.0.1:9/pixelStripeApi",
        keys,
        SPDIST_API_TOKENS=TOKEN,
        SPDIST_WEBHOOK_TOKEN="hook-tok",
    )
    api, base = start_api(env, tmp_path)
    worker = start_worker("hooks", env, tmp_path)
    ctx = make_ctx(pg_url, redis_url, [], api_keys=keys)
    try:
        up = upload()
        rid = enqueue(ctx, up, State.SUCCEEDED)
        event = {
            "event": "build.distributing",
            "projectId": PROJECT,
            "uploadId": up,
            "status": "Distribute",
            "timestamp": "2025-01-01T00:00:00Z",
        }
        assert httpx.post(f"{base}/v1/webhooks/streampixel/wrong", json=event).status_code == 404
        for _ in range(3):
            r = httpx.post(f"{base}/v1/webhooks/streampixel/hook-tok", json=event)
            assert r.status_code == 204 and r.content == b""
        wait_for(lambda: state_of(ctx, rid).state == State.CONFIRMED, 30, "confirmed")
        assert "hook-tok" not in api.log()
    finally:
        close(ctx)
        api.stop()
        worker.stop()
