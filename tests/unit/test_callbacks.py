"""Callbacks without services: URL validation, the signature, the backoff schedule."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from worker import callbacks
from worker.errors import ValidationError
from worker.settings import Settings

HOSTS = "hooks.example.com,127.0.0.1:8099,[::1]:9000"


def settings(**kw: object) -> Settings:
    return Settings(callback_hosts=HOSTS, callback_secret="s3cret", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/spdist",
        "http://HOOKS.example.com/x?y=1",  # hosts compare in any case
        "https://hooks.example.com:443/x",  # the default port written out
        "http://127.0.0.1:8099/hook",
        "http://[::1]:9000/hook",
    ],
)
def test_allowed_urls(url: str) -> None:
    assert callbacks.check_url(settings(), url) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com:8443/x",  # a bare host allows only the default port
        "http://127.0.0.1/hook",  # host:port allows only that port
        "http://127.0.0.1:8098/hook",
        "https://evil.example.com/x",
        "https://hooks.example.com.evil.example/x",
        "http://localhost:8099/hook",  # names are not resolved: another name is another host
        "file:///etc/passwd",
        "gopher://hooks.example.com/x",
        "https://user:pw@hooks.example.com/x",
        "https://hooks.example.com:99999/x",
        "https://hooks.example.com/a b",
        "https:///nohost",
        "",
        "x" * 3000,
        "http://[::1",  # urlsplit refuses it
        "http://hooks.example.com:x/",
        "http://hooks.example.com/\udcff",  # a lone surrogate, as JSON may carry
        "http://hooks.example.com/\x00",
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(ValidationError) as err:
        callbacks.check_url(settings(), url)
    assert err.value.field == "callbackUrl" and "pw" not in str(err.value)


def test_none_and_non_strings() -> None:
    assert callbacks.check_url(settings(), None) is None
    for value in (5, ["https://hooks.example.com/"], {"u": 1}, True):
        with pytest.raises(ValidationError):
            callbacks.check_url(settings(), value)


def test_no_host_allowed_by_default_and_a_secret_is_needed() -> None:
    with pytest.raises(ValidationError, match="SPDIST_CALLBACK_HOSTS"):
        callbacks.check_url(Settings(callback_secret="s"), "https://hooks.example.com/")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="SPDIST_CALLBACK_SECRET"):
        callbacks.check_url(Settings(callback_hosts=HOSTS), "https://hooks.example.com/")


def test_signature_is_the_hmac_of_the_raw_body() -> None:
    body = callbacks.body_bytes("distribution.confirmed", {"id": "é", "state": "confirmed"})
    raw = '{"event":"distribution.confirmed","distribution":{"id":"é","state":"confirmed"}}'
    assert body == raw.encode()
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert callbacks.signature("s3cret", body) == f"sha256={expected}"
    assert callbacks.verify("s3cret", body, f"sha256={expected}")
    assert not callbacks.verify("s3cret", body + b" ", f"sha256={expected}")
    assert not callbacks.verify("other", body, f"sha256={expected}")
    assert not callbacks.verify("s3cret", body, None)


def test_backoff_doubles_from_5_s_to_an_hour() -> None:
    s = Settings()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    delays = [(callbacks.next_try_at(s, n, now) - now).total_seconds() for n in range(1, 13)]
    assert delays[:4] == [5, 10, 20, 40]
    assert delays[-1] == 3600 and max(delays) == 3600
    assert all(b >= a for a, b in zip(delays, delays[1:], strict=False))
    assert callbacks.next_try_at(s, 10_000, now) - now == timedelta(hours=1)
    # 24 h of tries: about 30, then it gives up (the deliverer compares with expires_at)
    t, n = now, 1
    while t - now < timedelta(seconds=s.callback_expire_s):
        t, n = callbacks.next_try_at(s, n, t), n + 1
    assert 25 <= n <= 35
