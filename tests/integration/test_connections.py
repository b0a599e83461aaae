"""The call leaves on a connection opened before its slot, through a real TLS front whose
connection set-up is slow and which closes idle connections; and never after its deadline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.dev.fake_streampixel import FakeStreampixel
from worker.dev.network import TlsFront
from worker.dev.procs import wait_for
from worker.errors import NotSent
from worker.streampixel import SendTiming, StreampixelClient

pytestmark = pytest.mark.integration
USER, PROJECT = "1" * 24, "2" * 24


@pytest.fixture
def front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TlsFront, FakeStreampixel]]:
    fake = FakeStreampixel(interval_s=0.0).start()
    port = int(fake.origin.rsplit(":", 1)[1])
    tls = TlsFront(port, tmp_path, setup_s=(0.2, 0.3), idle_close_s=0.5)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_path))  # trusted as in production
    try:
        yield tls, fake
    finally:
        tls.close()
        fake.stop()


def _call(client: StreampixelClient, upload: str, **kw: Any) -> SendTiming:
    timing = SendTiming()
    client.distribute(
        api_key="k", user_id=USER, project_id=PROJECT, upload_id=upload, timing=timing, **kw
    )
    return timing


def test_call_leaves_on_the_prepared_connection(front: tuple[TlsFront, FakeStreampixel]) -> None:
    tls, fake = front
    with StreampixelClient(tls.url(), connect_timeout_s=2) as client:
        client.prepare()  # DNS, TCP and the slow TLS handshake: before the slot
        assert client.ready() and tls.connections == 1
        timing = _call(client, "a" * 24)
        assert not timing.connected  # nothing was set up between the slot and the send
        assert timing.sent_mono is not None and tls.connections == 1
        # The pool keeps nothing idle: a call without a prepared connection sets one up.
        assert not client.ready()
        assert _call(client, "b" * 24).connected and tls.connections == 2
    assert [c["uploadId"] for c in fake.calls()] == ["a" * 24, "b" * 24]


def test_prepared_connection_closed_meanwhile_is_replaced(
    front: tuple[TlsFront, FakeStreampixel],
) -> None:
    tls, fake = front
    with StreampixelClient(tls.url(), connect_timeout_s=2) as client:
        client.prepare()
        wait_for(lambda: not client.ready(), 10, "the front to close the idle connection")
        timing = _call(client, "c" * 24)
        assert timing.connected and timing.sent_mono is not None
    assert len(fake.calls()) == 1


def test_nothing_is_sent_past_the_send_deadline(front: tuple[TlsFront, FakeStreampixel]) -> None:
    tls, fake = front
    with StreampixelClient(tls.url(), connect_timeout_s=2) as client:
        client.prepare()
        with pytest.raises(NotSent):
            _call(client, "d" * 24, send_by=time.monotonic() - 0.001)
        # The deadline also holds when the connection must be set up at the call.
        with pytest.raises(NotSent):
            _call(client, "e" * 24, send_by=time.monotonic() + 0.05)
        assert _call(client, "f" * 24, send_by=time.monotonic() + 5).sent_mono is not None
    assert [c["uploadId"] for c in fake.calls()] == ["f" * 24]


class _Recording(StreampixelClient):
    """Notes, at each call, whether its prepared connection was open."""

    ready_at_call: list[bool]

    def distribute(self, **kw: Any) -> Any:
        self.ready_at_call.append(self.ready())
        return super().distribute(**kw)


def test_dispatch_opens_the_connection_before_the_slot(
    front: tuple[TlsFront, FakeStreampixel], sqlite_url: str, redis_url: str
) -> None:
    """The dispatch sets the connection up in the lead: at the call it is already open, and
    the call itself opens none."""
    from tests.integration.test_api import KEYS, close, make_ctx
    from worker import dispatch, distributions

    tls, fake = front
    recording = _Recording(tls.url(), connect_timeout_s=2)
    recording.ready_at_call = []
    # A lead of 1 s holds the front's 0.2-0.3 s set-up on a loaded machine too (with the
    # default 0.3 s a slow set-up misses the slot, as it should, and nothing is called).
    ctx = make_ctx(
        sqlite_url, redis_url, [], min_interval_s=1, pacer_lead_s=1.0, streampixel_url=tls.url()
    )
    ctx.client_factory = lambda: recording
    try:
        user = next(iter(KEYS))
        new = distributions.validate(ctx, user, PROJECT, "a" * 24)
        req = distributions.enqueue(ctx, new)
        assert dispatch.dispatch(ctx, req.id) == "triggered"
        assert recording.ready_at_call == [True]
        assert tls.connections == 1 and len(fake.calls()) == 1
    finally:
        recording.close()
        close(ctx)
