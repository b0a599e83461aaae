"""StreampixelClient against every answer distribute-file may give, via httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from worker.errors import (
    CallTimeout,
    Forbidden,
    NetworkError,
    NotFound,
    Outcome,
    PermanentError,
    RateLimited,
    Rejected,
    RetryableError,
    ServerError,
    StillProcessing,
    StreampixelError,
    Unauthorized,
)
from worker.streampixel import StreampixelClient, Triggered

API_KEY = "sk-live-SECRET-5f3c9a0e7b1d4c2a"
USER_ID = "663d0a1b2c3e4f5a6b7c8d9e"
PROJECT_ID = "664f1a2b3c4d5e6f7a8b9c0d"
UPLOAD_ID = "665a2b3c4d5e6f7a8b9c0e1f"
BASE_URL = "https://api.streampixel.io/pixelStripeApi"
HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"

Handler = Callable[[httpx.Request], httpx.Response]


def answering(status: int, **kwargs: Any) -> Handler:
    """A handler building a fresh response for every request."""
    return lambda request: httpx.Response(status, **kwargs)


def raising(exc_type: type[httpx.RequestError], text: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(text, request=request)

    return handler


def call(handler: Handler, base_url: str = BASE_URL) -> Triggered:
    with StreampixelClient(base_url, transport=httpx.MockTransport(handler)) as client:
        return client.distribute(
            api_key=API_KEY, user_id=USER_ID, project_id=PROJECT_ID, upload_id=UPLOAD_ID
        )


def failure(handler: Handler) -> StreampixelError:
    with pytest.raises(StreampixelError) as info:
        call(handler)
    return info.value


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def assert_no_key(exc: StreampixelError) -> None:
    assert API_KEY not in exc.message
    for link in chain(exc):
        assert API_KEY not in str(link)
        assert API_KEY not in repr(link)
        assert all(API_KEY not in repr(arg) for arg in link.args)


# --- the request we send ------------------------------------------------------------------


@pytest.mark.parametrize("base_url", [BASE_URL, BASE_URL + "/"])
def test_request_is_a_json_post_to_distribute_file(base_url: str) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"message": "Distribution triggered"})

    call(handler, base_url)
    [request] = sent
    assert request.method == "POST"
    assert request.url == "https://api.streampixel.io/pixelStripeApi/projects/distribute-file"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"] == "spdist/0.1"
    assert json.loads(request.content) == {
        "apiKey": API_KEY,
        "userId": USER_ID,
        "projectId": PROJECT_ID,
        "uploadId": UPLOAD_ID,
    }


def test_closed_client_refuses_to_send() -> None:
    client = StreampixelClient(BASE_URL, transport=httpx.MockTransport(answering(200)))
    with client:
        pass
    with pytest.raises(RuntimeError):
        client.distribute(api_key=API_KEY, user_id=USER_ID, project_id=PROJECT_ID, upload_id="x")


# --- 200 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"message": "Distribution triggered"},
        {
            "message": "File distribution triggered successfully",
            "success": True,
            "uploadId": UPLOAD_ID,
            "region": "europe",
        },
    ],
    ids=["current", "older"],
)
def test_200_with_message_is_triggered(body: dict[str, Any]) -> None:
    result = call(answering(200, json=body))
    assert result == Triggered(http_status=200, message=body["message"])
    assert result.outcome is Outcome.TRIGGERED


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "HTTP 200 with an empty body"),
        (
            {"text": "OK", "headers": {"content-type": "text/plain"}},
            "HTTP 200 with a non-JSON body (text/plain)",
        ),
        ({"json": ["Distribution triggered"]}, "HTTP 200 with unexpected JSON (list)"),
        ({"json": {"ok": True}}, "HTTP 200 with unexpected JSON (dict)"),
        ({"json": {"message": 42}}, "HTTP 200 with unexpected JSON (dict)"),
    ],
    ids=["empty", "non-json", "json-list", "json-no-message", "message-not-string"],
)
def test_garbled_200_is_a_retryable_server_error(kwargs: dict[str, Any], message: str) -> None:
    exc = failure(answering(200, **kwargs))
    assert type(exc) is ServerError
    assert (exc.outcome, exc.http_status, exc.message) == (Outcome.SERVER_ERROR, 200, message)
    assert_no_key(exc)


# --- error statuses -----------------------------------------------------------------------

STATUS_CASES = [
    pytest.param(
        400,
        {"json": {"message": "Missing required field: uploadId"}},
        Rejected,
        "Missing required field: uploadId",
        id="400-missing-field",
    ),
    pytest.param(
        400,
        {"text": "<html>Bad Request</html>", "headers": {"content-type": "text/html"}},
        Rejected,
        "HTTP 400 with a non-JSON body (text/html)",
        id="400-html",
    ),
    pytest.param(
        401,
        {"json": {"message": "Unauthorized: Invalid API Key"}},
        Unauthorized,
        "Unauthorized: Invalid API Key",
        id="401-key",
    ),
    pytest.param(
        401, {"json": {"message": "Invalid User"}}, Unauthorized, "Invalid User", id="401-user"
    ),
    pytest.param(403, {"json": {"message": "Access denied"}}, Forbidden, "Access denied", id="403"),
    pytest.param(
        404,
        {"json": {"message": "File not found in project"}},
        NotFound,
        "File not found in project",
        id="404-file",
    ),
    pytest.param(
        404,
        {"json": {"message": "Project not found"}},
        NotFound,
        "Project not found",
        id="404-project",
    ),
    pytest.param(415, {}, Rejected, "HTTP 415 with an empty body", id="415"),
    pytest.param(
        422, {"json": {"message": "Unprocessable"}}, Rejected, "Unprocessable", id="other-4xx"
    ),
    pytest.param(
        500,
        {"json": {"message": "Internal server error"}},
        ServerError,
        "Internal server error",
        id="500-json",
    ),
    pytest.param(
        502,
        {"text": HTML_502, "headers": {"content-type": "text/html; charset=utf-8"}},
        ServerError,
        "HTTP 502 with a non-JSON body (text/html)",
        id="502-html",
    ),
    pytest.param(503, {}, ServerError, "HTTP 503 with an empty body", id="503-empty"),
    pytest.param(
        504,
        {"content": b"gateway timeout"},
        ServerError,
        "HTTP 504 with a non-JSON body (no content type)",
        id="504-text",
    ),
    pytest.param(
        302,
        {"headers": {"location": "/elsewhere"}},
        ServerError,
        "HTTP 302 with an empty body",
        id="302",
    ),
]


@pytest.mark.parametrize(("status", "kwargs", "error", "message"), STATUS_CASES)
def test_error_status_maps_to_error(
    status: int, kwargs: dict[str, Any], error: type[StreampixelError], message: str
) -> None:
    exc = failure(answering(status, **kwargs))
    assert type(exc) is error
    assert (exc.http_status, exc.message, str(exc)) == (status, message, message)
    assert exc.outcome is error.outcome
    assert_no_key(exc)


@pytest.mark.parametrize(
    "message",
    [
        "File has no URL",
        "file has no url",
        "Upload has no URL yet.",
        "File has NO  URL: the upload is still processing",
        "The file is not processed",
        "Build is still processing, try later",
    ],
)
def test_400_saying_no_url_is_still_processing(message: str) -> None:
    exc = failure(answering(400, json={"message": message}))
    assert type(exc) is StillProcessing
    assert isinstance(exc, RetryableError)
    assert (exc.outcome, exc.http_status, exc.message) == (Outcome.PROCESSING, 400, message)


def test_long_message_is_truncated() -> None:
    exc = failure(answering(500, json={"message": "x" * 2000}))
    assert exc.message == "x" * 500


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (RateLimited, True),
        (StillProcessing, True),
        (ServerError, True),
        (CallTimeout, True),
        (NetworkError, True),
        (Rejected, False),
        (Unauthorized, False),
        (Forbidden, False),
        (NotFound, False),
    ],
)
def test_error_tree(error: type[StreampixelError], retryable: bool) -> None:
    assert issubclass(error, RetryableError) is retryable
    assert issubclass(error, PermanentError) is not retryable


# --- 429 ----------------------------------------------------------------------------------


def http_date_in(seconds: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


RATE_LIMIT_CASES = [
    pytest.param(
        {"json": {"message": "Rate limit exceeded. Try again in 2 minutes."}},
        120.0,
        id="text-minutes",
    ),
    pytest.param({"json": {"message": "Slow down, retry in 30 seconds"}}, 30.0, id="text-seconds"),
    pytest.param(
        {"json": {"message": "Rate limit exceeded"}, "headers": {"Retry-After": "30"}},
        30.0,
        id="header-seconds",
    ),
    pytest.param(
        {"json": {"message": "Rate limit exceeded", "retryAfter": 45}}, 45.0, id="field-camel"
    ),
    pytest.param(
        {"json": {"message": "Rate limit exceeded", "retry_after": "15.5"}}, 15.5, id="field-snake"
    ),
    pytest.param(
        {"json": {"message": "Try again in 2 minutes."}, "headers": {"Retry-After": "30"}},
        120.0,
        id="longest-wins",
    ),
    pytest.param({"json": {"message": "Rate limit exceeded"}}, None, id="nothing-stated"),
    pytest.param(
        {
            "text": "<html><body>429 Too Many Requests</body></html>",
            "headers": {"content-type": "text/html"},
        },
        None,
        id="edge-html",
    ),
    pytest.param(
        {"json": {"message": "x"}, "headers": {"Retry-After": "soon"}}, None, id="header-garbage"
    ),
]


@pytest.mark.parametrize(("kwargs", "wait"), RATE_LIMIT_CASES)
def test_429_is_rate_limited_with_stated_wait(kwargs: dict[str, Any], wait: float | None) -> None:
    exc = failure(answering(429, **kwargs))
    assert isinstance(exc, RateLimited)
    assert (exc.outcome, exc.http_status, exc.retry_after_s) == (Outcome.RATE_LIMITED, 429, wait)
    assert_no_key(exc)


def test_429_edge_html_message_describes_body() -> None:
    exc = failure(answering(429, text="<html>busy</html>", headers={"content-type": "text/html"}))
    assert exc.message == "HTTP 429 with a non-JSON body (text/html)"


@pytest.mark.parametrize(("offset", "low", "high"), [(90, 80.0, 90.0), (-60, 0.0, 0.0)])
def test_429_retry_after_http_date(offset: float, low: float, high: float) -> None:
    headers = {"Retry-After": http_date_in(offset)}
    exc = failure(answering(429, json={"message": "Rate limit exceeded"}, headers=headers))
    assert isinstance(exc, RateLimited)
    assert exc.retry_after_s is not None
    assert low <= exc.retry_after_s <= high


# --- no answer ----------------------------------------------------------------------------

TRANSPORT_CASES = [
    pytest.param(httpx.ReadTimeout, "timed out", CallTimeout, id="read-timeout"),
    pytest.param(httpx.ConnectTimeout, "timed out", CallTimeout, id="connect-timeout"),
    pytest.param(httpx.WriteTimeout, "timed out", CallTimeout, id="write-timeout"),
    pytest.param(httpx.PoolTimeout, "timed out", CallTimeout, id="pool-timeout"),
    pytest.param(
        httpx.ConnectError, "[Errno 111] Connection refused", NetworkError, id="connection-refused"
    ),
    pytest.param(
        httpx.ReadError, "[Errno 104] Connection reset by peer", NetworkError, id="connection-reset"
    ),
    pytest.param(
        httpx.RemoteProtocolError,
        "Server disconnected without sending a response.",
        NetworkError,
        id="remote-protocol-error",
    ),
    pytest.param(
        httpx.DecodingError, "Error -3 while decompressing data", ServerError, id="decoding-error"
    ),
]


@pytest.mark.parametrize(("exc_type", "text", "error"), TRANSPORT_CASES)
def test_transport_failure_maps_to_error(
    exc_type: type[httpx.RequestError], text: str, error: type[StreampixelError]
) -> None:
    exc = failure(raising(exc_type, text))
    assert type(exc) is error
    assert exc.http_status is None
    assert exc.message == f"{exc_type.__name__}: {text}"
    assert type(exc.__cause__) is exc_type
    assert exc.__context__ is None
    assert_no_key(exc)


# --- the API key never leaks --------------------------------------------------------------


def test_key_echoed_by_streampixel_is_scrubbed() -> None:
    exc = failure(answering(401, json={"message": f"Unauthorized: Invalid API Key {API_KEY}"}))
    assert exc.message == "Unauthorized: Invalid API Key ***"
    assert_no_key(exc)


def test_key_in_transport_error_is_scrubbed_and_request_dropped() -> None:
    exc = failure(raising(httpx.ConnectError, f"refused while sending {API_KEY}"))
    assert exc.message == "ConnectError: refused while sending ***"
    assert_no_key(exc)
    assert isinstance(exc.__cause__, httpx.RequestError)
    with pytest.raises(RuntimeError):
        exc.__cause__.request  # noqa: B018 - the request, with the key in its body, is gone


def test_key_echoed_in_a_200_is_scrubbed() -> None:
    result = call(answering(200, json={"message": f"Distribution triggered for {API_KEY}"}))
    assert result.message == "Distribution triggered for ***"
