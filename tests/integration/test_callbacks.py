"""Callbacks against real Redis and Postgres (and SQLite): the outbox row comes with the
change of state, tries are rows, a failing receiver gets the same signed bytes again in
order, a disallowed host is refused at enqueue."""

from __future__ import annotations

import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from api.main import create_app
from tests.integration.test_api import close, make_ctx
from worker import deliverer, distributions
from worker.context import Context
from worker.dev.callback_receiver import Receiver, Script
from worker.models import CallbackDelivery, DistributionRequest, State

with warnings.catch_warnings():  # starlette asks for httpx2; httpx serves the same
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration
USER = uuid.uuid4().hex[:24]
SECRET = "cb-secret-" + uuid.uuid4().hex
CI = {"Authorization": "Bearer tok-ci"}


def body(project: int = 1, upload: int = 1, **kw: Any) -> dict[str, Any]:
    return {"userId": USER, "projectId": f"{project:024x}", "uploadId": f"{upload:024x}", **kw}


def callback_ctx(db_url: str, redis_url: str, receiver: Receiver, **kw: Any) -> Context:
    options = {
        "api_keys": {USER: "sk-cb-1"},
        "api_tokens": "ci=tok-ci",
        "min_interval_s": 3600,
        "callback_hosts": receiver.host,
        "callback_secret": SECRET,
        "callback_backoff_base_s": 0.05,
        "callback_backoff_cap_s": 0.2,
        "callback_timeout_s": 2.0,
        **kw,
    }
    return make_ctx(db_url, redis_url, [], **options)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET, Script(statuses=[500, 503])) as r:
        yield r


@pytest.fixture
def api(db_url: str, redis_url: str, receiver: Receiver) -> Iterator[tuple[TestClient, Context]]:
    ctx = callback_ctx(db_url, redis_url, receiver)
    try:
        with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
            yield c, ctx
    finally:
        close(ctx)


def tries(ctx: Context, request_id: str) -> list[CallbackDelivery]:
    with ctx.sessions() as session:
        q = select(CallbackDelivery).where(CallbackDelivery.request_id == request_id)
        return list(session.scalars(q.order_by(CallbackDelivery.id)))


def move(ctx: Context, request_id: str, before: tuple[State, ...], after: State) -> None:
    """A change of state through the ledger, as the dispatch and the webhooks make it."""
    with ctx.sessions.begin() as session:
        assert ctx.ledger.transition(session, request_id, before, after)


def deliver_until(ctx: Context, done: Any, passes: int = 400) -> None:
    """Run the deliverer's passes until `done()`; due tries come within the short backoff."""
    with deliverer.client_for(ctx) as client:
        for _ in range(passes):
            if done():
                return
            if not deliverer.run_once(ctx, client):
                time.sleep(0.02)
    raise AssertionError("the callbacks were not delivered")


def test_fails_twice_then_delivered_in_order(
    api: tuple[TestClient, Context], receiver: Receiver
) -> None:
    c, ctx = api
    r = c.post("/v1/distributions", json=body(callbackUrl=receiver.url), headers=CI)
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    assert tries(ctx, rid) == []  # queued is not an event
    move(ctx, rid, (State.QUEUED,), State.SUCCEEDED)
    move(ctx, rid, (State.SUCCEEDED,), State.CONFIRMED)
    first = tries(ctx, rid)  # both events are in the outbox with the changes themselves
    assert [(t.event, t.event_no, t.try_no) for t in first] == [
        ("distribution.succeeded", 1, 1),
        ("distribution.confirmed", 2, 1),
    ]
    deliver_until(ctx, lambda: len(receiver.received) == 4)
    rows = tries(ctx, rid)
    assert [(t.event_no, t.try_no, t.outcome, t.http_status) for t in rows] == [
        (1, 1, "failed", 500),
        (2, 1, "delivered", 200),
        (1, 2, "failed", 503),
        (1, 3, "delivered", 200),
    ]
    events = [got.event for got in receiver.received]
    assert events == ["distribution.succeeded"] * 3 + ["distribution.confirmed"]
    assert len({got.body for got in receiver.received[:3]}) == 1  # the same bytes each try
    assert all(got.verified for got in receiver.received)
    assert receiver.received[0].distribution["state"] == "succeeded"
    assert receiver.received[3].distribution["id"] == rid
    assert {got.delivery for got in receiver.received} == {f"{rid}:1", f"{rid}:2"}
    spaced = [t for t in rows if t.event_no == 1]
    for before, after in zip(spaced, spaced[1:], strict=False):
        assert before.finished_at is not None and after.due_at > before.finished_at  # backoff
        assert after.started_at is not None and after.started_at >= after.due_at
    assert SECRET not in "".join(str(vars(t)) for t in rows)
    metrics = c.get("/metrics").text
    assert 'spdist_callback_tries_total{outcome="delivered"} 2.0' in metrics
    assert 'spdist_callback_tries_total{outcome="failed"} 2.0' in metrics


def test_every_path_writes_the_outbox(api: tuple[TestClient, Context], receiver: Receiver) -> None:
    """Cancel (API) and supersede (a newer request of the project) are events too."""
    c, ctx = api
    a = c.post("/v1/distributions", json=body(2, 1, callbackUrl=receiver.url), headers=CI).json()
    b = c.post("/v1/distributions", json=body(2, 2, callbackUrl=receiver.url), headers=CI).json()
    assert [t.event for t in tries(ctx, a["id"])] == ["distribution.superseded"]
    assert c.post(f"/v1/distributions/{b['id']}/cancel", headers=CI).status_code == 200
    assert [t.event for t in tries(ctx, b["id"])] == ["distribution.cancelled"]
    plain = c.post("/v1/distributions", json=body(3, 1), headers=CI).json()
    c.post(f"/v1/distributions/{plain['id']}/cancel", headers=CI)
    assert tries(ctx, plain["id"]) == []  # no callbackUrl, no callback


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2:{port}/hook",  # another host
        "http://127.0.0.1:1/hook",  # the host on another port
        "ftp://127.0.0.1:{port}/hook",
        "http://user:pw@127.0.0.1:{port}/hook",
        "not a url",
        "",
    ],
)
def test_disallowed_callback_is_422_and_stores_nothing(
    api: tuple[TestClient, Context], receiver: Receiver, url: str
) -> None:
    c, ctx = api
    r = c.post(
        "/v1/distributions", json=body(callbackUrl=url.format(port=receiver.port)), headers=CI
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "callbackUrl" and "pw" not in r.text
    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(DistributionRequest)) == 0
    assert c.post("/v1/distributions", json=body(callbackUrl=5), headers=CI).status_code == 422


def test_signature_checked_by_openssl(api: tuple[TestClient, Context], receiver: Receiver) -> None:
    """An implementation that is not ours (OpenSSL's HMAC) agrees with the header."""
    c, ctx = api
    rid = c.post("/v1/distributions", json=body(callbackUrl=receiver.url), headers=CI).json()["id"]
    c.post(f"/v1/distributions/{rid}/cancel", headers=CI)
    deliver_until(ctx, lambda: receiver.received)
    got = receiver.received[0]
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", SECRET, "-hex"],
        input=got.body,
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert got.signature == "sha256=" + out.strip().rsplit(" ", 1)[-1]
    assert got.body == tries(ctx, rid)[0].body.encode()  # type: ignore[union-attr]


def test_lease_keeps_a_claimed_try_from_a_second_deliverer(
    db_url: str, redis_url: str, receiver: Receiver
) -> None:
    """A try claimed by one deliverer is not claimed by another until the lease runs out,
    and a claim whose lease was lost cannot record its outcome."""
    ctx = callback_ctx(db_url, redis_url, receiver, callback_lease_s=0.3)
    try:
        with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
            rid = c.post(
                "/v1/distributions", json=body(callbackUrl=receiver.url), headers=CI
            ).json()["id"]
            c.post(f"/v1/distributions/{rid}/cancel", headers=CI)
        with ctx.engine.connect() as conn:
            mine = deliverer.claim(conn, ctx)
            assert [m.request_id for m in mine] == [rid]
            assert deliverer.claim(conn, ctx) == []  # held by the lease
        time.sleep(0.4)  # the lease runs out (no assertion on time: the claim says it)
        with ctx.engine.connect() as conn:
            theirs = deliverer.claim(conn, ctx)
            assert [t.id for t in theirs] == [mine[0].id]
            assert deliverer.finish(ctx, conn, mine[0], 200, "HTTP 200") is None
            assert deliverer.finish(ctx, conn, theirs[0], 200, "HTTP 200") == "delivered"
    finally:
        close(ctx)


def test_receiver_that_never_answers_is_retried_spaced(db_url: str, redis_url: str) -> None:
    """Each try waits at most the timeout, then the next is written after the backoff; the
    deliverer's threads are their own (the dispatch path never waits on them)."""
    with Receiver(SECRET, Script(hang_s=1.0)) as hung:
        ctx = callback_ctx(db_url, redis_url, hung, callback_timeout_s=0.2)
        try:
            with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
                rid = c.post(
                    "/v1/distributions", json=body(callbackUrl=hung.url), headers=CI
                ).json()["id"]
                c.post(f"/v1/distributions/{rid}/cancel", headers=CI)
            deliver_until(ctx, lambda: len(tries(ctx, rid)) >= 3)
            rows = tries(ctx, rid)
            assert all(t.outcome == "failed" and t.error == "ReadTimeout" for t in rows[:2])
            for before, after in zip(rows, rows[1:], strict=False):
                assert before.finished_at is not None and after.due_at > before.finished_at
        finally:
            close(ctx)


def test_gives_up_after_the_horizon(db_url: str, redis_url: str) -> None:
    with Receiver(SECRET, Script(then=500)) as failing:
        ctx = callback_ctx(db_url, redis_url, failing, callback_expire_s=0.3)
        try:
            with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
                rid = c.post(
                    "/v1/distributions", json=body(callbackUrl=failing.url), headers=CI
                ).json()["id"]
                c.post(f"/v1/distributions/{rid}/cancel", headers=CI)
            deliver_until(ctx, lambda: any(t.outcome == "expired" for t in tries(ctx, rid)))
            rows = tries(ctx, rid)
            assert rows[-1].outcome == "expired" and all(t.finished_at for t in rows)
            with deliverer.client_for(ctx) as client:
                assert deliverer.run_once(ctx, client) == 0  # nothing left to try
        finally:
            close(ctx)


def test_cli_enqueue_callback_url(db_url: str, redis_url: str, receiver: Receiver) -> None:
    from tests.integration.test_cli import spdist
    from worker.dev.procs import spdist_env

    env = spdist_env(
        db_url,
        redis_url,
        "http://127.0.0.1:9/x",
        {USER: "sk-cb-1"},
        SPDIST_CALLBACK_HOSTS=receiver.host,
        SPDIST_CALLBACK_SECRET=SECRET,
        SPDIST_MIN_INTERVAL_S="3600",
    )
    ids = ["--user", USER, "--project", "1" * 24, "--upload", "2" * 24]
    bad = spdist(env, "enqueue", *ids, "--callback-url", "http://elsewhere.example/x")
    assert bad.returncode != 0 and "SPDIST_CALLBACK_HOSTS" in bad.stderr
    ok = spdist(env, "enqueue", *ids, "--callback-url", receiver.url)
    assert ok.returncode == 0, ok.stderr
    assert SECRET not in ok.stdout + ok.stderr + bad.stdout + bad.stderr


def test_celery_task_takes_a_callback_url(
    api: tuple[TestClient, Context], receiver: Receiver
) -> None:
    _, ctx = api
    refused = distributions.enqueue_message(ctx, body(callbackUrl="http://elsewhere.example/"))
    assert refused["field"] == "callbackUrl"
    made = distributions.enqueue_message(ctx, body(callbackUrl=receiver.url))
    with ctx.sessions() as session:
        assert session.get(DistributionRequest, made["id"]).callback_url == receiver.url  # type: ignore[union-attr]
