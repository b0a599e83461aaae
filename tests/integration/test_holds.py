"""Held requests against real Redis and Postgres (and SQLite): stored in no lane, making no
call, until released; cancel and supersede work on them; auto-distribution may start them."""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from api.main import create_app
from tests.integration.test_api import close, make_ctx
from tests.integration.test_cli import spdist
from worker import backpressure, dispatch, distributions, reconcile, webhooks
from worker.context import Context
from worker.dev.procs import spdist_env
from worker.models import DistributionAttempt, DistributionRequest

with warnings.catch_warnings():  # starlette asks for httpx2; httpx serves the same
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration
USER = uuid.uuid4().hex[:24]
AUTO_USER = uuid.uuid4().hex[:24]
HELD_PROJECT, OPEN_PROJECT = "c" * 24, "d" * 24
TOKENS = "ci=tok-ci,other=tok-other,ops=tok-ops"
CI, OTHER, OPS = ({"Authorization": f"Bearer tok-{n}"} for n in ("ci", "other", "ops"))


def body(project: int = 1, upload: int = 1, **kw: Any) -> dict[str, Any]:
    return {"userId": USER, "projectId": f"{project:024x}", "uploadId": f"{upload:024x}", **kw}


class NoCall:
    """A Streampixel client that fails the test the moment a call is about to be made."""

    def prepare(self) -> None:
        raise AssertionError("a call to Streampixel was being prepared")

    def distribute(self, *args: Any, **kw: Any) -> Any:
        raise AssertionError("a call to Streampixel was about to be made")


@pytest.fixture
def api(db_url: str, redis_url: str) -> Iterator[tuple[TestClient, Context]]:
    sent: list[Any] = []  # the dispatch messages (wakes) the context publishes
    ctx = make_ctx(
        db_url,
        redis_url,
        sent,
        api_keys={USER: "sk-hold-1", AUTO_USER: "sk-hold-2"},
        api_tokens=TOKENS,
        operators="ops",
        min_interval_s=3600,
        auto_distribute={HELD_PROJECT: AUTO_USER, OPEN_PROJECT: AUTO_USER},
        hold_projects=HELD_PROJECT.upper(),
    )
    ctx.client_factory = NoCall  # type: ignore[assignment]
    ctx.sent = sent  # type: ignore[attr-defined]
    try:
        with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
            yield c, ctx
    finally:
        close(ctx)


def in_lane(ctx: Context, request_id: str, user: str = USER) -> bool:
    """Whether the request has an entry in its user's lane (the Redis sorted set)."""
    return any(request_id in m for m in ctx.pacer.members(user))


def attempts(ctx: Context, request_id: str) -> int:
    with ctx.sessions() as session:
        rows = session.scalars(
            select(DistributionAttempt).where(DistributionAttempt.request_id == request_id)
        )
        return len(rows.all())


def test_held_request_is_in_no_lane_until_released(api: tuple[TestClient, Context]) -> None:
    c, ctx = api
    r = c.post("/v1/distributions", json=body(hold=True), headers=CI)
    held = r.json()
    assert r.status_code == 202 and held["state"] == "held", r.text
    assert held["position"] is None and held["estimatedDispatchAt"] is None
    assert not in_lane(ctx, held["id"]) and ctx.sent == []  # type: ignore[attr-defined]
    reconcile.reconcile(ctx)  # neither the outbox nor a lane refill publishes it
    assert not in_lane(ctx, held["id"]) and ctx.sent == []  # type: ignore[attr-defined]
    assert dispatch.dispatch(ctx, held["id"]) and attempts(ctx, held["id"]) == 0  # no call
    with ctx.sessions() as session:
        assert backpressure.count_waiting(session.connection(), USER) == 1
    listed = c.get("/v1/distributions", params={"state": "held"}, headers=CI).json()
    assert [d["id"] for d in listed["items"]] == [held["id"]]
    assert c.get(f"/v1/users/{USER}/lane", headers=CI).json()["items"] == []
    r = c.post(f"/v1/distributions/{held['id']}/release", headers=CI)
    assert r.status_code == 202 and r.json()["state"] == "queued" and r.json()["position"] == 1
    assert in_lane(ctx, held["id"]) and ctx.sent  # type: ignore[attr-defined]
    lane = c.get(f"/v1/users/{USER}/lane", headers=CI).json()
    assert [i["id"] for i in lane["items"]] == [held["id"]]


def test_release_is_for_held_requests_and_their_caller(api: tuple[TestClient, Context]) -> None:
    c, ctx = api
    held = c.post("/v1/distributions", json=body(hold=True), headers=CI).json()
    r = c.post(f"/v1/distributions/{held['id']}/release", headers=OTHER)
    assert r.status_code == 403 and r.json()["detail"]
    assert not in_lane(ctx, held["id"])
    assert c.post(f"/v1/distributions/{held['id']}/release", headers=OPS).status_code == 202
    again = c.post(f"/v1/distributions/{held['id']}/release", headers=CI)
    assert again.status_code == 409 and "not held" in again.json()["detail"]
    queued = c.post("/v1/distributions", json=body(2, 2), headers=CI).json()
    assert c.post(f"/v1/distributions/{queued['id']}/release", headers=CI).status_code == 409
    missing = c.post(f"/v1/distributions/{'0' * 32}/release", headers=CI)
    assert missing.status_code == 404 and missing.json()["detail"]


def test_cancel_and_supersede_a_held_request(api: tuple[TestClient, Context]) -> None:
    c, ctx = api
    first = c.post("/v1/distributions", json=body(hold=True), headers=CI).json()
    second = c.post("/v1/distributions", json=body(upload=2, hold=True), headers=CI).json()
    old = c.get(f"/v1/distributions/{first['id']}", headers=CI).json()
    assert (old["state"], old["supersededBy"]) == ("superseded", second["id"])
    other = c.post("/v1/distributions", json=body(2, 3, hold=True), headers=CI).json()
    assert c.get(f"/v1/distributions/{other['id']}", headers=CI).json()["state"] == "held"
    r = c.post(f"/v1/distributions/{second['id']}/cancel", headers=CI)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert c.post(f"/v1/distributions/{second['id']}/release", headers=CI).status_code == 409
    assert not in_lane(ctx, second["id"])


def test_release_takes_the_place_of_a_queued_request(api: tuple[TestClient, Context]) -> None:
    """Released, a coalescing request supersedes its project's queued one, as an enqueue does."""
    c, ctx = api
    queued = c.post("/v1/distributions", json=body(), headers=CI).json()
    held = c.post("/v1/distributions", json=body(upload=2, hold=True), headers=CI).json()
    assert c.get(f"/v1/distributions/{queued['id']}", headers=CI).json()["state"] == "queued"
    assert c.post(f"/v1/distributions/{held['id']}/release", headers=CI).status_code == 202
    old = c.get(f"/v1/distributions/{queued['id']}", headers=CI).json()
    assert (old["state"], old["supersededBy"]) == ("superseded", held["id"])
    assert in_lane(ctx, held["id"]) and not in_lane(ctx, queued["id"])


def test_auto_distribution_of_a_hold_project_starts_held(api: tuple[TestClient, Context]) -> None:
    _, ctx = api
    up_held, up_open = uuid.uuid4().hex[:24], uuid.uuid4().hex[:24]
    for project, up in ((HELD_PROJECT, up_held), (OPEN_PROJECT, up_open)):
        event_id = webhooks.store(
            ctx, {"event": "build.approved", "projectId": project, "uploadId": up}
        )
        assert event_id is not None
        assert "auto-distributed" in webhooks.process(ctx, event_id)
    with ctx.sessions() as session:
        rows = {r.upload_id: r for r in session.scalars(select(DistributionRequest))}
    assert (rows[up_held].state, rows[up_open].state) == ("held", "queued")
    assert not in_lane(ctx, rows[up_held].id, AUTO_USER)
    assert in_lane(ctx, rows[up_open].id, AUTO_USER)
    again = webhooks.store(
        ctx,
        {
            "event": "build.approved",
            "projectId": HELD_PROJECT,
            "uploadId": up_held,
            "status": "again",
        },
    )
    assert again is not None and "not needed" in webhooks.process(ctx, again)


def test_rejected_build_fails_its_held_request(api: tuple[TestClient, Context]) -> None:
    c, ctx = api
    held = c.post("/v1/distributions", json=body(hold=True), headers=CI).json()
    event_id = webhooks.store(
        ctx, {"event": "build.rejected", "projectId": f"{1:024x}", "uploadId": f"{1:024x}"}
    )
    assert event_id is not None and webhooks.process(ctx, event_id) == "failed 1"
    assert c.get(f"/v1/distributions/{held['id']}", headers=CI).json()["state"] == "failed"


def test_hold_must_be_a_boolean(api: tuple[TestClient, Context]) -> None:
    c, _ = api
    r = c.post("/v1/distributions", json=body(hold="yes"), headers=CI)
    assert r.status_code == 422 and r.json()["field"] == "hold"


@pytest.fixture
def env(db_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return spdist_env(
        db_url,
        redis_url,
        "http://127.0.0.1:9/x",
        {USER: "sk-hold-cli"},
        SPDIST_MIN_INTERVAL_S="3600",
    )


def test_hold_release_and_cancel_from_the_command_line(env: dict[str, str]) -> None:
    ids = ["--user", USER, "--project", "ab" * 12]
    out = spdist(env, "enqueue", *ids, "--upload", "cd" * 12, "--hold", "--json")
    first = json.loads(out.stdout)
    assert first["state"] == "held" and first["position"] is None, out.stderr
    second = spdist(env, "enqueue", *ids, "--upload", "ce" * 12, "--hold").stdout.strip()
    shown = json.loads(spdist(env, "show", first["id"], "--json").stdout)
    assert (shown["state"], shown["supersededBy"]) == ("superseded", second)
    released = spdist(env, "release", second)
    assert released.returncode == 0 and released.stdout.split() == [second, "queued"]
    lanes = json.loads(spdist(env, "lanes", "--json").stdout)
    assert second in [i["id"] for lane in lanes for i in lane["items"]]
    again = spdist(env, "release", second)
    assert again.returncode == 1 and "not held" in again.stderr
    third = spdist(env, "enqueue", *ids, "--upload", "cf" * 12, "--hold").stdout.strip()
    assert spdist(env, "cancel", third).stdout.split() == [third, "cancelled"]


def test_the_celery_task_may_start_a_request_held(api: tuple[TestClient, Context]) -> None:
    _, ctx = api
    answer = distributions.enqueue_message(ctx, body(upload=5, hold=True, createdBy="pipeline"))
    assert answer["state"] == "held" and not in_lane(ctx, str(answer["id"]))
    refused = distributions.enqueue_message(ctx, body(upload=6, hold="true"))
    assert refused["field"] == "hold"


def test_held_requests_count_against_the_cap(db_url: str, redis_url: str) -> None:
    ctx = make_ctx(
        db_url,
        redis_url,
        [],
        api_keys={USER: "sk-hold-cap"},
        api_tokens=TOKENS,
        max_waiting_per_user=1,
    )
    try:
        with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
            assert c.post("/v1/distributions", json=body(hold=True), headers=CI).status_code == 202
            full = c.post("/v1/distributions", json=body(2, 2), headers=CI)  # the fast path
            assert full.status_code == 429 and "Retry-After" in full.headers
            held = c.post("/v1/distributions", json=body(3, 3, hold=True), headers=CI)
            assert held.status_code == 429
    finally:
        close(ctx)
