"""The HTTP API in one process: SQLite, a fakeredis pacer, messages caught in lists."""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from api.main import create_app
from worker import webhooks
from worker.context import build_context
from worker.models import DistributionRequest, State, WebhookEvent
from worker.pacer import Wake
from worker.settings import Settings

with warnings.catch_warnings():  # starlette asks for httpx2; httpx serves the same
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

USER, USER2 = "1" * 24, "2" * 24
PROJECT, UPLOAD = "a" * 24, "c" * 24
TOKEN = "tok-unit"
KEY = "sk-unit-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Api:
    """An app over its own context; `sent` and `announced` catch outgoing messages."""

    def __init__(self, tmp: Path, **overrides: Any) -> None:
        from worker.migrate import upgrade

        url = f"sqlite:///{tmp / 'api.db'}"
        upgrade(url)
        options: dict[str, Any] = {
            "database_url": url,
            "api_keys": {USER: KEY},
            "min_interval_s": 120,
            "api_tokens": f"other,{TOKEN}",
            "webhook_token": "hook-secret",
            **overrides,
        }
        settings = Settings(**options)
        self.sent: list[tuple[str, Wake]] = []
        self.announced: list[int] = []
        self.ctx = build_context(
            settings,
            redis_client=fakeredis.FakeRedis(),
            send=lambda user, wake: self.sent.append((user, wake)),
        )
        app = create_app(self.ctx, send_webhook_event=lambda i, *_: self.announced.append(i))
        self.client = TestClient(app)

    def post(self, body: dict[str, Any], **headers: str) -> Any:
        return self.client.post("/v1/distributions", json=body, headers={**AUTH, **headers})

    def set_state(self, request_id: str, state: State, **values: Any) -> None:
        with self.ctx.sessions.begin() as session:
            req = session.get(DistributionRequest, request_id)
            assert req is not None
            req.state = state
            for k, v in values.items():
                setattr(req, k, v)


def body(**kw: Any) -> dict[str, Any]:
    return {"userId": USER, "projectId": PROJECT, "uploadId": UPLOAD, **kw}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path)
    with a.client:
        yield a


def test_openapi_declares_the_bearer_scheme_on_every_v1_route(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            v1 = path.startswith("/v1/") and "/webhooks/" not in path
            wanted: list[dict[str, list[str]]] | None = [{"HTTPBearer": []}] if v1 else None
            assert op.get("security") == wanted, (method, path)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic dG9rLXVuaXQ="},
        {"Authorization": "Bearer"},
        {"Authorization": f"bearer  {TOKEN}x"},
        {"Authorization": "Bearer tok-\xfcnit".encode("latin-1")},
    ],
)
def test_every_v1_route_wants_a_valid_token(api: Api, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/v1/distributions"),
        ("GET", "/v1/distributions/x"),
        ("POST", "/v1/distributions"),
        ("POST", "/v1/distributions/x/cancel"),
        ("POST", "/v1/distributions/x/retry"),
        ("GET", f"/v1/users/{USER}/lane"),
    ]:
        r = api.client.request(method, path, headers=headers, json=body())
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"


def test_enqueue_answers_202_with_the_distribution(api: Api) -> None:
    r = api.post(body(priority=5))
    assert r.status_code == 202, r.text
    d = r.json()
    assert (d["userId"], d["state"], d["priority"], d["position"]) == (USER, "queued", 5, 1)
    assert d["estimatedDispatchAt"].endswith("Z") and d["attempts"] == []
    assert api.sent and api.sent[0][0] == USER
    got = api.client.get(f"/v1/distributions/{d['id']}", headers=AUTH)
    assert got.status_code == 200 and got.json()["id"] == d["id"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (body(userId="xyz"), "userId"),
        (body(projectId="g" * 24), "projectId"),
        (body(uploadId=None), "uploadId"),
        (body(priority=101), "priority"),
        (body(priority="1"), "priority"),
        (body(priority=True), "priority"),
        (body(coalesce="yes"), "coalesce"),
        (body(apiKey="sk"), "apiKey"),
        (body(userId=USER2), "userId"),  # valid id, but no key configured
        ({"projectId": PROJECT, "uploadId": UPLOAD}, "userId"),
    ],
)
def test_invalid_input_is_422_naming_the_field(api: Api, payload: Any, field: str) -> None:
    r = api.post(payload)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert field in r.json()["detail"]


def test_not_json_is_422(api: Api) -> None:
    r = api.client.post(
        "/v1/distributions", content=b"{nope", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["field"]


def test_bodies_over_16_kib_are_413(api: Api) -> None:
    big = json.dumps(body(pad="x" * 17000)).encode()
    r = api.client.post(
        "/v1/distributions", content=big, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield big[:9000]
        yield big[9000:]

    r = api.client.post(
        "/v1/distributions", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == 413
    with api.ctx.sessions() as session:
        assert session.query(DistributionRequest).count() == 0


def test_idempotency_key_gives_back_the_first_request(api: Api) -> None:
    first = api.post(body(), **{"Idempotency-Key": "k1"})
    again = api.post(body(priority=0, coalesce=True), **{"Idempotency-Key": "k1"})
    other = api.post(body(priority=3), **{"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 409)
    assert again.json()["id"] == first.json()["id"]
    with api.ctx.sessions() as session:
        assert session.query(DistributionRequest).count() == 1


def test_list_pages_newest_first_with_a_cursor(api: Api) -> None:
    ids = [api.post(body(coalesce=False)).json()["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "userId": USER, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/distributions", params=params, headers=AUTH).json()
        seen += [d["id"] for d in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    r = api.client.get("/v1/distributions", params={"cursor": "@@"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["field"] == "cursor"
    r = api.client.get("/v1/distributions", params={"state": "bogus"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["field"] == "state"


def test_lane_positions_and_estimates(api: Api) -> None:
    a = api.post(body(coalesce=False)).json()
    b = api.post(body(coalesce=False, priority=9)).json()
    lane = api.client.get(f"/v1/users/{USER}/lane", headers=AUTH).json()
    assert [i["id"] for i in lane["items"]] == [b["id"], a["id"]]
    assert [i["position"] for i in lane["items"]] == [1, 2]
    assert lane["items"][0]["estimatedDispatchAt"] < lane["items"][1]["estimatedDispatchAt"]
    assert api.client.get("/v1/users/nothex/lane", headers=AUTH).status_code == 422


def test_cancel_and_retry_follow_the_409_rules(api: Api) -> None:
    d = api.post(body()).json()
    assert api.client.post(f"/v1/distributions/{d['id']}/retry", headers=AUTH).status_code == 409
    r = api.client.post(f"/v1/distributions/{d['id']}/cancel", headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert api.client.post(f"/v1/distributions/{d['id']}/cancel", headers=AUTH).status_code == 409
    api.set_state(d["id"], State.FAILED)
    r = api.client.post(f"/v1/distributions/{d['id']}/retry", headers=AUTH)
    assert r.status_code == 202 and r.json()["state"] == "queued"
    assert api.client.get("/v1/distributions/nope", headers=AUTH).status_code == 404
    assert api.client.post("/v1/distributions/nope/cancel", headers=AUTH).status_code == 404


def test_health_ready_and_metrics(api: Api) -> None:
    api.post(body())
    assert api.client.get("/healthz").json()["status"] == "ok"
    ready = api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "redis": "ok"}
    text = api.client.get("/metrics").text
    assert 'spdist_requests{state="queued"} 1.0' in text
    assert f'spdist_lane_depth{{user_id="{USER}"}} 1.0' in text
    assert "spdist_enqueue_to_dispatch_seconds_bucket" in text
    assert f'spdist_next_slot_seconds{{user_id="{USER}"}}' in text


def test_scrapes_at_once_share_one_reading_at_a_time(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight scrapes at once: one reading runs at a time (api/shared_reading.py), each
    answer read after its scrape came, and every scrape answered."""
    from api.routes import health

    real, lock, running, most = health._exposition, threading.Lock(), [0], [0]

    def slow_reading(ctx: Any) -> bytes:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return real(ctx)

    monkeypatch.setattr(health, "_exposition", slow_reading)
    api.post(body())
    start = threading.Barrier(8)

    def scrape(_: int) -> Any:
        start.wait()
        return api.client.get("/metrics")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(scrape, range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert all('spdist_requests{state="queued"} 1.0' in a.text for a in answers)
    assert most[0] == 1


def hook(api: Api, payload: dict[str, Any], token: str = "hook-secret") -> Any:
    return api.client.post(f"/v1/webhooks/streampixel/{token}", json=payload)


def test_webhook_token_and_payload(api: Api) -> None:
    event = {"event": "build.distributing", "projectId": PROJECT, "uploadId": UPLOAD}
    assert hook(api, event, "wrong").status_code == 404
    assert hook(api, {"nope": 1}, "wrong").status_code == 404
    assert hook(api, {"uploadId": UPLOAD}).status_code == 422
    assert hook(api, {"event": "build.approved", "uploadId": "zz"}).status_code == 422
    assert hook(api, {"event": "webhook.test", "projectId": PROJECT}).status_code == 204
    assert hook(api, event).status_code == 204
    assert hook(api, event).status_code == 204  # the duplicate is stored once
    assert len(api.announced) == 2
    with api.ctx.sessions() as session:
        assert session.query(WebhookEvent).count() == 2


def test_webhook_off_without_a_token(tmp_path: Path) -> None:
    api = Api(tmp_path, webhook_token=None)
    assert hook(api, {"event": "webhook.test"}, "").status_code == 404
    assert hook(api, {"event": "webhook.test"}, "anything").status_code == 404


def test_webhooks_act_once(api: Api) -> None:
    d = api.post(body()).json()
    api.set_state(d["id"], State.SUCCEEDED)
    hook(api, {"event": "build.distributing", "projectId": PROJECT, "uploadId": UPLOAD})
    assert webhooks.process(api.ctx, api.announced[0]) == "confirmed 1"
    assert webhooks.process(api.ctx, api.announced[0]) == "confirmed 1"  # recorded result
    got = api.client.get(f"/v1/distributions/{d['id']}", headers=AUTH).json()
    assert got["state"] == "confirmed"


def test_enqueue_message_validates_like_the_api(api: Api) -> None:
    from worker.distributions import enqueue_message

    ok = enqueue_message(api.ctx, body())
    assert ok["state"] == "queued" and len(ok["id"]) == 32
    bad = enqueue_message(api.ctx, body(uploadId="x"))
    assert bad["field"] == "uploadId" and "error" in bad
    assert enqueue_message(api.ctx, body(apiKey="k"))["field"] == "apiKey"
