"""The console in a real browser (Debian's chromium driven by Playwright) on a real stack.

A real worker calls the fake Streampixel, so the lane's next slot is the pacer's own; the
test signs in, watches an ETA count down, cancels from the page, and checks the CSRF guard.
Set SPDIST_CONSOLE_SCREENSHOTS to a folder to keep screenshots of the pages (docs/).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_api import TOKEN, start_api
from worker.callers import bare_name
from worker.dev.procs import Proc, spdist_env, start_fake, start_worker, wait_for

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INTERVAL_S = 30


def _need_chromium() -> None:
    if shutil.which(CHROMIUM):
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing (./dev test installs it)")
    pytest.skip(f"{CHROMIUM} is missing")


@pytest.fixture
def stack(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """API and one worker against the fake Streampixel; yields (API base, user)."""
    user = uuid.uuid4().hex[:24]
    fake, sp_url = start_fake(tmp_path, interval_s=0.5)
    env = spdist_env(
        pg_url,
        redis_url,
        sp_url,
        {user: "sk-console-" + uuid.uuid4().hex},
        SPDIST_API_TOKENS=TOKEN,
        SPDIST_OPERATORS=bare_name(TOKEN),
        SPDIST_MIN_INTERVAL_S=str(INTERVAL_S),
    )
    procs: list[Proc] = [fake]
    try:
        procs.append(start_worker("consolew", env, tmp_path))
        api, base = start_api(env, tmp_path)
        procs.append(api)
        yield base, user
    finally:
        for p in procs:
            p.stop()


@pytest.fixture
def page() -> Iterator[Any]:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1200, "height": 900})
        finally:
            browser.close()


def enqueue(base: str, user: str, n: int) -> str:
    body = {"userId": user, "projectId": f"{n:024x}", "uploadId": uuid.uuid4().hex[:24]}
    r = httpx.post(
        f"{base}/v1/distributions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def seconds_left(page: Any, request_id: str) -> int | None:
    """The ETA the page shows for `request_id`, as seconds from now (None if not 'in N s')."""
    text = page.locator(f'#lanes tr[data-id="{request_id}"] td.eta').inner_text()
    m = re.fullmatch(r"in (?:(\d+) min )?(\d+) s", text.strip())
    return int(m.group(1) or 0) * 60 + int(m.group(2)) if m else None


def shoot(page: Any, name: str) -> None:
    folder = os.environ.get("SPDIST_CONSOLE_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name))


def sign_in(page: Any, base: str) -> None:
    page.goto(f"{base}/ui/")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#denied:not([hidden])")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#lanes")


def test_console_counts_down_and_cancels(stack: tuple[str, str], page: Any) -> None:
    base, user = stack
    first = enqueue(base, user, 1)
    wait_for(lambda: _state(base, first) == "succeeded", 60, "the first call")
    second, third = enqueue(base, user, 2), enqueue(base, user, 3)
    listed = httpx.get(
        f"{base}/v1/distributions",
        params={"userId": user},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()["items"]
    places = {d["id"]: (d["position"], d["estimatedDispatchAt"] is not None) for d in listed}
    assert places == {third: (2, True), second: (1, True), first: (None, False)}
    sign_in(page, base)
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["spdist_token"]["httpOnly"] and cookies["spdist_token"]["sameSite"] == "Strict"
    page.wait_for_selector(f'#lanes tr[data-id="{third}"]')
    start = wait_for(lambda: seconds_left(page, third), 10, "an ETA in seconds")
    assert isinstance(start, int) and INTERVAL_S < start <= 2 * INTERVAL_S + 5
    wait_for(lambda: (seconds_left(page, third) or start) < start, 10, "the ETA to count down")
    page.click(f'#recent a[title="{first}"]')
    page.wait_for_selector("#request .f-state:text('succeeded')")
    page.fill("#user", user)
    page.click("#user-form button")
    page.wait_for_selector("#timeline .timeline-bar .mark.triggered")
    shoot(page, "console-lanes.png")
    page.click(f'#lanes tr[data-id="{third}"] button.cancel')
    page.wait_for_selector(f'#lanes tr[data-id="{third}"]', state="detached")
    assert _state(base, third) == "cancelled"
    assert _state(base, second) == "queued"
    shoot(page, "console-cancelled.png")
    _csrf_refused(page, base, second)
    _docs_offline(page, base)


def _docs_offline(page: Any, base: str) -> None:
    """`/docs` renders with every request kept on loopback (outside ones are aborted)."""
    outside: list[str] = []

    def only_loopback(route: Any) -> None:
        if route.request.url.startswith(base):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(f"{base}/docs")
    page.wait_for_selector(".swagger-ui .info .title:has-text('spdist')")
    page.wait_for_selector(".opblock-summary-path:has-text('/v1/distributions')")
    assert outside == []


def _csrf_refused(page: Any, base: str, request_id: str) -> None:
    """A POST with the cookie but without the page's CSRF header or origin changes nothing."""
    jar = {c["name"]: c["value"] for c in page.context.cookies()}
    url = f"{base}/ui/api/distributions/{request_id}/cancel"
    bare = httpx.post(url, cookies=jar, headers={"Origin": base})
    assert bare.status_code == 403, bare.text
    forged = httpx.post(
        url,
        cookies=jar,
        headers={"Origin": "http://evil.example", "X-Spdist-Csrf": jar["spdist_csrf"]},
    )
    assert forged.status_code == 403, forged.text
    assert _state(base, request_id) == "queued"


def _state(base: str, request_id: str) -> str:
    r = httpx.get(
        f"{base}/v1/distributions/{request_id}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    return str(r.json()["state"])
