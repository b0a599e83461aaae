"""Hand-written inputs that gave 500 (a naive datetime, a NUL byte PostgreSQL refuses):
every one is a 4xx with the error shape now, on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from api.main import create_app
from tests.integration.test_api import AUTH, USER, body, close, make_ctx

with warnings.catch_warnings():  # starlette asks for httpx2; httpx serves the same
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration
HOOK = "/v1/webhooks/streampixel/hook-5xx"
RID = "0" * 32


def cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.fixture
def client(db_url: str, redis_url: str) -> Iterator[TestClient]:
    ctx = make_ctx(db_url, redis_url, [], webhook_token="hook-5xx")
    try:
        with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
            yield c
    finally:
        close(ctx)


CASES: list[tuple[str, str, dict[str, Any], int]] = [
    ("GET", "/v1/distributions/abc%00def", {}, 404),
    ("GET", f"/v1/distributions/{RID}%00", {}, 404),
    ("POST", "/v1/distributions/abc%00/cancel", {}, 404),
    ("POST", "/v1/distributions/%FF%FE/retry", {}, 404),
    ("GET", "/v1/distributions", {"params": {"cursor": cursor(f"2026-12-02T05:00:00|{RID}")}}, 422),
    (
        "GET",
        "/v1/distributions",
        {"params": {"cursor": cursor("2026-12-02T05:00:00+00:00|a\x00")}},
        422,
    ),
    (
        "GET",
        "/v1/distributions",
        {"params": {"cursor": cursor(f"9999-12-31T23:59:59-14:00|{RID}")}},
        422,
    ),
    ("GET", "/v1/distributions", {"params": {"cursor": "%FF"}}, 422),
    ("GET", "/v1/distributions", {"params": {"userId": "a" * 23 + "\x00"}}, 422),
    ("GET", "/v1/distributions", {"params": {"limit": 10**40}}, 422),
    ("GET", f"/v1/users/{USER}/lane", {"params": {"limit": -(10**40)}}, 422),
    ("GET", f"/v1/users/{USER}/lane", {"params": {"cursor": cursor("lane|99999999999999")}}, 422),
    ("POST", "/v1/distributions", {"json": body(priority=10**40)}, 422),
    ("POST", "/v1/distributions", {"json": body(uploadId="c" * 23 + "\x00")}, 422),
    ("POST", "/v1/distributions", {"content": b'{"userId": "\xff\xfe"}'}, 422),
    ("POST", "/v1/distributions", {"json": body(), "headers": {"Idempotency-Key": "k\x7f"}}, 422),
    ("POST", "/v1/distributions", {"json": body(), "headers": {"Idempotency-Key": "x" * 300}}, 422),
    ("POST", HOOK, {"json": {"event": "build.distributing\x00", "uploadId": "c" * 24}}, 422),
    ("POST", HOOK, {"json": {"event": "webhook.test", "objection": "a\x00b"}}, 422),
    ("POST", HOOK, {"json": {"event": "webhook.test", "extra": ["\x00"]}}, 422),
    ("POST", HOOK, {"content": b'{"event": "\xff"}'}, 422),
    ("POST", HOOK, {"json": {"event": "webhook.test", "uploadId": 10**40}}, 422),
]


@pytest.mark.parametrize(("method", "path", "kw", "status"), CASES)
def test_no_input_makes_a_5xx(
    client: TestClient, method: str, path: str, kw: dict[str, Any], status: int
) -> None:
    kw = dict(kw)  # the table is shared by the SQLite and the PostgreSQL runs
    headers = {**AUTH, "Content-Type": "application/json", **kw.pop("headers", {})}
    r = client.request(method, path, headers=headers, **kw)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str)
