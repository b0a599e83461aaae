"""The local Streampixel fake, over real HTTP on a loopback port."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import httpx
import pytest

from worker.dev.fake_rules import RATE_LIMITED
from worker.dev.fake_streampixel import FakeStreampixel, fetch_calls

KEY = "sk-live-SECRET-5f3c9a0e7b1d4c2a"
USER_A = "663d0a1b2c3e4f5a6b7c8d9e"
USER_B = "663d0a1b2c3e4f5a6b7c8d9f"
PROJECT = "664f1a2b3c4d5e6f7a8b9c0d"
UPLOAD = "665a2b3c4d5e6f7a8b9c0e1f"
OTHER_UPLOAD = "665a2b3c4d5e6f7a8b9c0e20"


@pytest.fixture
def fake() -> Iterator[FakeStreampixel]:
    with FakeStreampixel(interval_s=0.2) as server:
        yield server


@pytest.fixture
def client(fake: FakeStreampixel) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=5.0) as http:
        yield http


def body(user: str = USER_A, upload: str = UPLOAD, key: str = KEY) -> dict[str, str]:
    return {"apiKey": key, "userId": user, "projectId": PROJECT, "uploadId": upload}


def distribute(client: httpx.Client, **kw: str) -> httpx.Response:
    return client.post("/projects/distribute-file", json=body(**kw))


def wait_until_mono(deadline: float) -> None:
    """Sleep until time.monotonic() reaches deadline (the fake records the same clock)."""
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(left)


def test_triggered_call_is_recorded_without_the_key(
    fake: FakeStreampixel, client: httpx.Client
) -> None:
    answer = distribute(client)
    assert answer.status_code == 200
    assert answer.json() == {"message": "Distribution triggered"}
    [call] = fake.calls()
    assert call["seq"] == 1 and call["userId"] == USER_A and call["uploadId"] == UPLOAD
    assert call["outcome"] == "triggered" and call["status"] == 200
    assert call["violation"] is False and call["gapS"] is None and call["keyOk"] is True
    assert "apiKey" not in call and KEY not in json.dumps(fake.calls())


def test_call_inside_the_interval_is_a_violation_for_that_user_only(
    fake: FakeStreampixel, client: httpx.Client
) -> None:
    fake.configure(interval_s=120)
    assert distribute(client).status_code == 200
    second = distribute(client, upload=OTHER_UPLOAD)  # the limit is per user, across uploads
    assert second.status_code == 429 and second.json() == {"message": RATE_LIMITED}
    assert distribute(client, user=USER_B).status_code == 200
    outcomes = [(c["userId"], c["outcome"], c["violation"]) for c in fake.calls()]
    assert outcomes == [
        (USER_A, "triggered", False),
        (USER_A, "violation", True),
        (USER_B, "triggered", False),
    ]
    assert 0 <= fake.calls()[1]["gapS"] < 120


def test_call_after_the_interval_is_accepted(fake: FakeStreampixel, client: httpx.Client) -> None:
    assert distribute(client).status_code == 200
    wait_until_mono(fake.calls()[0]["mono"] + 0.2)
    assert distribute(client).status_code == 200
    assert fake.calls()[1]["gapS"] >= 0.2


def test_a_429_restarts_the_window(fake: FakeStreampixel, client: httpx.Client) -> None:
    fake.configure(interval_s=0.6)
    assert distribute(client).status_code == 200
    start = fake.calls()[0]["mono"]
    wait_until_mono(start + 0.3)
    assert distribute(client).status_code == 429
    wait_until_mono(start + 0.65)  # past the first call's window, inside the second's
    assert distribute(client).status_code == 429
    assert [c["violation"] for c in fake.calls()] == [False, True, True]


def test_concurrent_arrivals_are_judged_one_at_a_time(
    fake: FakeStreampixel, client: httpx.Client
) -> None:
    fake.configure(interval_s=60)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(lambda _: distribute(client).status_code, range(8)))
    assert statuses == [200] + [429] * 7
    monos = [c["mono"] for c in fake.calls()]
    assert monos == sorted(monos) and [c["seq"] for c in fake.calls()] == list(range(1, 9))


def test_scripted_no_url_then_triggered(fake: FakeStreampixel, client: httpx.Client) -> None:
    fake.configure(interval_s=0, rules={UPLOAD: [{"status": 400, "message": "File has no URL"}]})
    first = distribute(client)
    assert (first.status_code, first.json()) == (400, {"message": "File has no URL"})
    assert distribute(client).status_code == 200
    assert [c["outcome"] for c in fake.calls()] == ["scripted", "triggered"]


def test_rules_by_upload_then_default_and_repeat_last(
    fake: FakeStreampixel, client: httpx.Client
) -> None:
    fake.configure(
        interval_s=0,
        repeat_last=True,
        rules={
            "default": [{"status": 500, "message": "Internal server error"}],
            OTHER_UPLOAD: [{"status": 404, "message": "File not found in project"}],
        },
    )
    statuses = [distribute(client, upload=OTHER_UPLOAD).status_code for _ in range(2)]
    statuses += [distribute(client).status_code for _ in range(2)]
    assert statuses == [404, 404, 500, 500]


def test_reset_action_drops_the_connection(fake: FakeStreampixel, client: httpx.Client) -> None:
    fake.configure(interval_s=0, rules={"default": [{"action": "reset"}]})
    with pytest.raises(httpx.TransportError):
        distribute(client)
    assert distribute(client).status_code == 200  # the client reconnects
    first = fake.calls()[0]
    assert (first["status"], first["action"], first["outcome"]) == (None, "reset", "scripted")


@pytest.mark.parametrize(
    ("action", "status", "content_type", "check"),
    [
        ({"action": "garbage"}, 200, "text/plain", lambda text: text == "<<garbage>>"),
        ({"action": "html", "status": 502}, 502, "text/html", lambda text: "<html>" in text),
        ({"action": "empty", "status": 503}, 503, None, lambda text: text == ""),
    ],
)
def test_malformed_answers(
    fake: FakeStreampixel,
    client: httpx.Client,
    action: dict[str, Any],
    status: int,
    content_type: str | None,
    check: Any,
) -> None:
    fake.configure(rules={"default": [action]})
    answer = distribute(client)
    assert answer.status_code == status
    assert answer.headers.get("content-type") == content_type
    assert check(answer.text)


def test_hang_answers_late(fake: FakeStreampixel, client: httpx.Client) -> None:
    fake.configure(
        interval_s=0,
        rules={"default": [{"action": "hang", "seconds": 0.3}, {"action": "hang", "seconds": 5}]},
    )
    started = time.monotonic()
    assert distribute(client).status_code == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        client.post("/projects/distribute-file", json=body(), timeout=0.2)
    assert [c["status"] for c in fake.calls()] == [200, 200]  # the server did trigger


def test_rate_limits_that_are_not_violations(fake: FakeStreampixel, client: httpx.Client) -> None:
    fake.configure(interval_s=0, force_429_next=2, rules={"default": [{"action": "ratelimit"}]})
    statuses = [distribute(client).status_code for _ in range(4)]
    assert statuses == [429, 429, 429, 200]
    calls = fake.calls()
    assert [c["outcome"] for c in calls] == ["forced_429", "forced_429", "scripted", "triggered"]
    assert not any(c["violation"] for c in calls)


def test_wrong_content_type_is_415(fake: FakeStreampixel, client: httpx.Client) -> None:
    answer = client.post(
        "/projects/distribute-file",
        content=json.dumps(body()),
        headers={"Content-Type": "text/plain"},
    )
    assert (answer.status_code, answer.json()) == (415, {"message": "Unsupported Media Type"})
    assert fake.calls()[0]["outcome"] == "unsupported_media_type"


@pytest.mark.parametrize("missing", ["apiKey", "userId", "projectId", "uploadId"])
def test_missing_field_is_400(fake: FakeStreampixel, client: httpx.Client, missing: str) -> None:
    payload = {k: v for k, v in body().items() if k != missing}
    answer = client.post("/projects/distribute-file", json=payload)
    assert answer.status_code == 400
    assert answer.json() == {"message": f"Missing required field: {missing}"}
    assert fake.calls()[0]["outcome"] == "bad_request"


def test_key_mismatch_is_401_and_does_not_spend_the_interval(
    fake: FakeStreampixel, client: httpx.Client
) -> None:
    fake.configure(interval_s=60, keys={USER_A: KEY})
    wrong = distribute(client, key="sk-wrong")
    assert (wrong.status_code, wrong.json()) == (401, {"message": "Unauthorized: Invalid API Key"})
    assert distribute(client).status_code == 200
    assert [c["keyOk"] for c in fake.calls()] == [False, True]
    assert "sk-wrong" not in json.dumps(fake.calls())


def test_control_api_over_http(fake: FakeStreampixel, client: httpx.Client) -> None:
    with httpx.Client(base_url=fake.control_url, timeout=5.0) as control:
        assert control.get("/health").json() == {"ok": True}
        config = {"interval_s": 60, "rules": {"default": [{"status": 403, "message": "no"}]}}
        assert control.post("/config", json=config).status_code == 200
        assert control.post("/config", json={"bogus": 1}).status_code == 400
        assert control.post("/config", json={"rules": {"default": [{"action": "x"}]}}).is_error
        assert [distribute(client).status_code for _ in range(2)] == [403, 429]
        assert control.get("/calls").json() == {"calls": fake.calls()}
        assert fetch_calls(fake.url) == fetch_calls(fake.control_url) == fake.calls()
        assert control.post("/reset").status_code == 200
        assert fetch_calls(fake.url) == []
        assert distribute(client).status_code == 200  # windows and rules are gone too


class _Receiver(BaseHTTPRequestHandler):
    events: queue.Queue[dict[str, Any]] = queue.Queue()

    def do_POST(self) -> None:
        self.events.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_webhook_after_a_triggered_call(fake: FakeStreampixel, client: httpx.Client) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _Receiver) as receiver:
        thread = Thread(target=receiver.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        host, port = receiver.server_address[:2]
        fake.configure(webhook_url=f"http://{host!s}:{port}/hook", webhook_delay_s=0.01)
        assert distribute(client).status_code == 200
        event = _Receiver.events.get(timeout=5)
        receiver.shutdown()
        thread.join()
    assert event["event"] == "build.distributing" and event["status"] == "Distribute"
    assert (event["projectId"], event["uploadId"], event["fileUrl"]) == (PROJECT, UPLOAD, None)
    assert event["timestamp"].endswith("Z")


def test_main_in_a_subprocess() -> None:
    module = "worker.dev.fake_streampixel"
    command = [sys.executable, "-m", module, "--port", "0", "--interval", "5"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"fake streampixel listening on (http://\S+/pixelStripeApi)\n", line)
        assert match, line
        try:
            with httpx.Client(base_url=match[1], timeout=5.0) as http:
                assert distribute(http).status_code == 200
                assert distribute(http).status_code == 429
            assert [c["violation"] for c in fetch_calls(match[1])] == [False, True]
        finally:
            proc.terminate()
        assert proc.wait(timeout=10) == 0
