"""Client for Streampixel's `POST /projects/distribute-file`."""

from __future__ import annotations

import json
import math
import re
import ssl
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import httpcore
import httpx

from worker.errors import (
    CallTimeout,
    Forbidden,
    NetworkError,
    NotFound,
    NotSent,
    Outcome,
    RateLimited,
    Rejected,
    ServerError,
    StillProcessing,
    StreampixelError,
    Unauthorized,
)
from worker.transport import PreparedTransport, SendTooLate, send_deadline

DISTRIBUTE_PATH = "projects/distribute-file"
USER_AGENT = "spdist/0.1"
_SCRUBBED = "***"
_TEXT_SCAN_CHARS = 2000

# Streampixel publishes no exact string for "file has no URL": match loosely.
_STILL_PROCESSING = re.compile(r"no\s+url|not\s+(?:yet\s+)?processed|processing", re.IGNORECASE)
_WAIT_IN_TEXT = re.compile(
    r"\bin\s+(\d+(?:\.\d+)?)\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PERMANENT_BY_STATUS: dict[int, type[StreampixelError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    415: Rejected,
}


@dataclass(frozen=True)
class Triggered:
    """Streampixel accepted the call (200); distribution runs asynchronously."""

    http_status: int
    message: str
    outcome: Outcome = Outcome.TRIGGERED


@dataclass
class SendTiming:
    """When the request left (time.monotonic(), from httpcore's trace), and whether it had to
    open a connection at the call (no prepared one, or it was gone)."""

    sent_mono: float | None = None
    connected: bool = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx's `trace` extension callback."""
        if event == "http11.send_request_body.complete":
            self.sent_mono = time.monotonic()
        elif event == "connection.connect_tcp.started":
            self.connected = True


@dataclass(frozen=True)
class _Body:
    """What we could read from a response body."""

    data: Any  # parsed JSON, or None when the body is not JSON
    message: str | None  # the JSON object's `message`, when it has one
    description: str  # short description used when there is no message


class StreampixelClient:
    """Calls POST {base}/projects/distribute-file."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # Without an injected transport, each call's connection is opened ahead of it by
        # `prepare()` (worker/transport.py); through a proxy from the environment
        # (HTTPS_PROXY) httpx's own transport connects at the call, and only the send-time
        # correction keeps the pacing.
        own = transport is None and not _proxied(base_url)
        self._prepared = PreparedTransport() if own else None
        self._connect_timeout_s = connect_timeout_s
        self._http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=transport or self._prepared,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            },
        )

    def prepare(self) -> None:
        """Open the connection the next call will use (DNS, TCP, TLS) now, ahead of its slot;
        a no-op with an injected transport. Raises NetworkError or CallTimeout."""
        if self._prepared is None:
            return
        url = self._http.base_url
        try:
            self._prepared.prepare(url, self._connect_timeout_s)
        except httpcore.TimeoutException as exc:
            raise CallTimeout(f"opening a connection to {url.host}: {type(exc).__name__}") from None
        except (httpcore.NetworkError, OSError, ssl.SSLError) as exc:
            raise NetworkError(f"opening a connection to {url.host}: {exc!r}") from None

    def ready(self) -> bool:
        """Whether a prepared connection is open for the next call."""
        url = self._http.base_url
        port = url.port or (443 if url.scheme == "https" else 80)
        return self._prepared is not None and self._prepared.backend.ready(url.host, port)

    def distribute(
        self,
        *,
        api_key: str,
        user_id: str,
        project_id: str,
        upload_id: str,
        send_by: float | None = None,
        timing: SendTiming | None = None,
    ) -> Triggered:
        """Makes the call; returns Triggered on 200 or raises a StreampixelError subclass.

        Past `send_by` (time.monotonic()) no byte of the request is written: NotSent.
        `timing` learns when the request left."""
        payload = {
            "apiKey": api_key,
            "userId": user_id,
            "projectId": project_id,
            "uploadId": upload_id,
        }
        response = self._post(payload, api_key, send_by, timing or SendTiming())
        return _interpret(response, api_key)

    def _post(
        self, payload: dict[str, str], api_key: str, send_by: float | None, timing: SendTiming
    ) -> httpx.Response:
        """Sends the request, mapping every httpx exception to ours (the one place)."""
        fresh = self._prepared.backend.fresh_connects if self._prepared else 0
        try:
            with send_deadline(send_by):
                return self._http.post(
                    DISTRIBUTE_PATH, json=payload, extensions={"trace": timing.trace}
                )
        except SendTooLate as exc:
            raise NotSent(str(exc)) from None
        except httpx.RequestError as exc:
            error = _transport_error(exc, api_key)
            cause = _scrubbed_copy(exc, api_key)
        finally:
            if self._prepared is not None:  # httpcore traces a connect_tcp for a prepared one too
                timing.connected = self._prepared.backend.fresh_connects > fresh
        # Raised outside the except block so the original (which holds the request, and
        # so the API key in its body) is neither our __cause__ nor our __context__.
        raise error from cause

    def close(self) -> None:
        """Closes the pooled connections."""
        self._http.close()

    def __enter__(self) -> StreampixelClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _proxied(base_url: str) -> bool:
    """Whether the environment routes `base_url` through a proxy, as httpx would."""
    url = httpx.URL(base_url)
    proxies = urllib.request.getproxies()
    return bool(proxies.get(url.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(
        url.host
    )


def scrub(text: str, secret: str) -> str:
    """Replaces every occurrence of `secret` in `text` with ***."""
    return text.replace(secret, _SCRUBBED) if secret else text


def _scrubbed_copy(exc: httpx.RequestError, api_key: str) -> httpx.RequestError:
    """Same exception type and (scrubbed) text, without the request or its traceback."""
    return type(exc)(scrub(str(exc), api_key))


def _transport_error(exc: httpx.RequestError, api_key: str) -> StreampixelError:
    detail = scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, api_key)
    if isinstance(exc, httpx.TimeoutException):
        return CallTimeout(detail)
    if isinstance(exc, httpx.DecodingError):  # the body arrived garbled
        return ServerError(detail)
    return NetworkError(detail)


def _interpret(response: httpx.Response, api_key: str) -> Triggered:
    status = response.status_code
    body = _read_body(response)
    message = scrub(body.message if body.message is not None else body.description, api_key)
    if status == 200:
        # A 200 normally means "triggered", but one whose body is not the documented
        # {"message": ...} did not come from Streampixel's API as documented (an edge
        # page, a truncated answer): retrying is safe, since a duplicate trigger is
        # at worst rate limited, whereas a false "triggered" would lose the request.
        if body.message is None:
            raise ServerError(message, http_status=status)
        return Triggered(http_status=status, message=message)
    raise _status_error(status, message, body, response)


def _status_error(
    status: int, message: str, body: _Body, response: httpx.Response
) -> StreampixelError:
    if status == 429:
        wait = _retry_after_s(response, body)
        return RateLimited(message, http_status=status, retry_after_s=wait)
    if status == 400:
        still = body.message is not None and _STILL_PROCESSING.search(body.message)
        return (StillProcessing if still else Rejected)(message, http_status=status)
    if status in _PERMANENT_BY_STATUS:
        return _PERMANENT_BY_STATUS[status](message, http_status=status)
    if 400 <= status < 500:
        return Rejected(message, http_status=status)
    return ServerError(message, http_status=status)


def _read_body(response: httpx.Response) -> _Body:
    status = response.status_code
    if not response.content.strip():
        return _Body(None, None, f"HTTP {status} with an empty body")
    try:
        data = json.loads(response.content)
    except ValueError:
        media = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
        return _Body(None, None, f"HTTP {status} with a non-JSON body ({media})")
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, str):
        return _Body(data, message, message)
    return _Body(data, None, f"HTTP {status} with unexpected JSON ({type(data).__name__})")


def _retry_after_s(response: httpx.Response, body: _Body) -> float | None:
    """The longest wait the answer states, in seconds; None when it states none."""
    text = body.message if body.data is not None else response.text[:_TEXT_SCAN_CHARS]
    stated = [
        _seconds_from_header(response.headers.get("retry-after")),
        _seconds_from_field(body.data),
        _seconds_from_text(text or ""),
    ]
    waits = [wait for wait in stated if wait is not None]
    return max(waits) if waits else None


def _seconds_from_header(value: str | None) -> float | None:
    """Retry-After as delay-seconds or an HTTP-date."""
    if not value:
        return None
    number = _as_seconds(value)
    if number is not None:
        return number
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _seconds_from_field(data: Any) -> float | None:
    if not isinstance(data, dict):
        return None
    for key in ("retryAfter", "retry_after"):
        value = data.get(key)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            seconds = _as_seconds(str(value))
            if seconds is not None:
                return seconds
    return None


def _seconds_from_text(text: str) -> float | None:
    """A wait written out, like "Try again in 2 minutes."."""
    match = _WAIT_IN_TEXT.search(text)
    if match is None:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)[0].lower()]


def _as_seconds(value: str) -> float | None:
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
