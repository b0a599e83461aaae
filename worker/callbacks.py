"""Callbacks to the caller: which URLs may be called, the body, its signature, the backoff.

A request's `callbackUrl` is checked at enqueue against SPDIST_CALLBACK_HOSTS, so spdist
never sends a request to an address nobody allowed. The body is built once, at an event's
first try, and its bytes are stored: every try of an event sends (and signs) the same
bytes. The deliverer (worker/deliverer.py) does the sending.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from worker.errors import ValidationError
from worker.settings import Settings

FIELD = "callbackUrl"
MAX_URL_CHARS = 2000
SIGNATURE_HEADER = "X-Spdist-Signature"
DELIVERY_HEADER = "X-Spdist-Delivery"  # "<request id>:<event number>": a receiver's dedupe key
EVENT_HEADER = "X-Spdist-Event"
DEFAULT_PORTS = {"http": 80, "https": 443}


def check_url(settings: Settings, value: object) -> str | None:
    """The callback URL if its scheme is http(s) and its host (or host:port) is allowed;
    None stays None. ValidationError (a 422) names the field, never echoes the URL."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_URL_CHARS:
        raise ValidationError(
            f"{FIELD} must be a URL of at most {MAX_URL_CHARS} characters", field=FIELD
        )
    if not value.isprintable() or any(c.isspace() for c in value):
        raise ValidationError(f"{FIELD} holds a space or a control character", field=FIELD)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValidationError(f"{FIELD} is not a valid URL", field=FIELD) from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValidationError(
            f"{FIELD} must be an http:// or https:// URL with a host", field=FIELD
        )
    if parts.username is not None or parts.password is not None:
        raise ValidationError(f"{FIELD} must not carry a user or password", field=FIELD)
    if settings.callback_secret is None:
        raise ValidationError(
            f"{FIELD} needs SPDIST_CALLBACK_SECRET set: callbacks are signed", field=FIELD
        )
    if not host_allowed(settings.callback_host_set, parts.hostname, port, parts.scheme):
        raise ValidationError(f"{FIELD}'s host is not in SPDIST_CALLBACK_HOSTS", field=FIELD)
    return value


def host_allowed(allowed: frozenset[str], host: str, port: int | None, scheme: str) -> bool:
    """Whether `host` (lower case, as urlsplit gives it) on `port` is allowed: an entry
    `host` allows it on the scheme's default port only, `host:port` on that port."""
    real_port = port if port is not None else DEFAULT_PORTS[scheme]
    name = f"[{host}]" if ":" in host else host  # IPv6 literals are written bracketed
    if f"{name}:{real_port}" in allowed:
        return True
    return real_port == DEFAULT_PORTS[scheme] and name in allowed


def parse_hosts(value: str) -> frozenset[str]:
    """SPDIST_CALLBACK_HOSTS: comma-separated `host` or `host:port`, any case."""
    return frozenset(h.strip().lower() for h in value.split(",") if h.strip())


def body_bytes(event: str, distribution: dict[str, Any]) -> bytes:
    """`{"event": "distribution.<state>", "distribution": {...}}`, compact UTF-8 JSON."""
    payload = {"event": event, "distribution": distribution}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: str, body: bytes) -> str:
    """The `X-Spdist-Signature` value: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver checks (README, Callbacks): the header matches the body's HMAC."""
    return header is not None and hmac.compare_digest(signature(secret, body), header)


def next_try_at(settings: Settings, try_no: int, now: datetime) -> datetime:
    """When the try after try `try_no` (1 is the first) is due: base doubling, capped."""
    delay = settings.callback_backoff_base_s * 2 ** min(try_no - 1, 40)
    return now + timedelta(seconds=min(delay, settings.callback_backoff_cap_s))
