"""`/ui/` without a browser: who gets in, what a forged or bare POST gets, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from api.main import create_app
from tests.integration.test_api import TOKEN, TestClient, body, close, make_ctx
from worker.callers import bare_name
from worker.context import Context

ORIGIN = {"Origin": "http://testserver"}
OTHER = "not-an-operator-token"


@pytest.fixture
def client(db_url: str, redis_url: str) -> Iterator[tuple[TestClient, Context]]:
    """The API with TOKEN's caller an operator, and OTHER a caller that is not."""
    tokens = f"{TOKEN},ci={OTHER}"
    ctx = make_ctx(db_url, redis_url, [], api_tokens=tokens, operators=bare_name(TOKEN))
    try:
        with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
            yield c, ctx
    finally:
        close(ctx)


def test_console_is_for_operators(client: Any) -> None:
    c, _ = client
    r = c.post(
        "/ui/login",
        content=f"token={OTHER}",
        follow_redirects=False,
        headers={**ORIGIN, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/?denied=operator"
    assert "spdist_token" not in c.cookies
    c.cookies.set("spdist_token", OTHER, path="/ui")
    assert c.get("/ui/api/overview").status_code == 401


def _sign_in(c: Any) -> str:
    r = c.post(
        "/ui/login",
        content=f"token={TOKEN}",
        follow_redirects=False,
        headers={**ORIGIN, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/"
    cookie = r.headers.get_list("set-cookie")
    assert any("spdist_token=" in h and "HttpOnly" in h and "SameSite=strict" in h for h in cookie)
    return str(c.cookies["spdist_csrf"])


def test_console_wants_a_valid_token(client: Any) -> None:
    c, _ = client
    page = c.get("/ui/")
    assert page.status_code == 200 and 'action="/ui/login"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert c.get("/ui/api/overview").status_code == 401
    bad = c.post(
        "/ui/login",
        content="token=nope",
        follow_redirects=False,
        headers={**ORIGIN, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert bad.status_code == 303 and "denied" in bad.headers["location"]
    elsewhere = c.post(
        "/ui/login", content=f"token={TOKEN}", headers={"Origin": "http://evil.example"}
    )
    assert elsewhere.status_code == 403 and "spdist_token" not in c.cookies
    assert c.get("/ui/static/../main.py").status_code == 404


def test_console_data_and_actions(client: Any) -> None:
    c, _ = client
    rid = c.post("/v1/distributions", json=body(1), headers={"Authorization": f"Bearer {TOKEN}"})
    rid = rid.json()["id"]
    csrf = _sign_in(c)
    assert "console.js" in c.get("/ui/").text
    data = c.get("/ui/api/overview", params={"user": body(1)["userId"], "hours": 1}).json()
    assert [i["id"] for lane in data["lanes"] for i in lane["items"]] == [rid]
    assert data["timeline"]["calls"] == [] and data["intervalS"] > 0
    assert c.get("/ui/api/overview", params={"hours": 0}).status_code == 422
    url = f"/ui/api/distributions/{rid}/cancel"
    assert c.post(url, headers=ORIGIN).status_code == 403  # no CSRF header
    assert c.post(url, headers={"X-Spdist-Csrf": csrf}).status_code == 403  # no Origin
    assert c.post(url, headers={**ORIGIN, "X-Spdist-Csrf": "x" + csrf}).status_code == 403
    done = c.post(url, headers={**ORIGIN, "X-Spdist-Csrf": csrf})
    assert done.status_code == 200 and done.json()["state"] == "cancelled"
    again = c.post(url, headers={**ORIGIN, "X-Spdist-Csrf": csrf})
    assert again.status_code == 409 and "not waiting" in again.json()["detail"]
    assert c.get(f"/ui/api/distributions/{rid}").json()["state"] == "cancelled"
    assert c.get("/ui/api/distributions/nope%3Fx").status_code == 404
    release = c.post(
        f"/ui/api/distributions/{rid}/release", headers={**ORIGIN, "X-Spdist-Csrf": csrf}
    )
    assert release.status_code in (404, 405, 409)  # the release route comes with `held`
    assert (
        c.post(f"{url[:-6]}explode", headers={**ORIGIN, "X-Spdist-Csrf": csrf}).status_code == 422
    )
