"""httpx's transport with connections opened ahead of the request, and a send deadline.

Pacing is judged where calls arrive, so nothing slow may sit between taking a slot and the
request leaving. `prepare()` does the DNS look-up, the TCP connect and the TLS handshake in
the pacer's lead, before the slot; the request then goes out on that connection. The pool
keeps no idle connections between calls (each call's connection is prepared for it): a
keep-alive connection left from a call two minutes earlier is usually closed by then, and
the pool child that makes the next call is often another process anyway.

`send_by` is a deadline on this process's monotonic clock: a write of the request after it
raises `SendTooLate` before the bytes go out, so no call ever leaves later than the pacing
fence assumed it could (`worker/dispatch.py`).

Only httpcore's public extension points are used: a `NetworkBackend` whose `connect_tcp`
hands out the prepared stream, and `NetworkStream` wrappers.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

_SEND_BY: ContextVar[float | None] = ContextVar("spdist_send_by", default=None)


class SendTooLate(Exception):
    """A write of the request was due after its send deadline; nothing was written."""


@contextlib.contextmanager
def send_deadline(deadline: float | None) -> Iterator[None]:
    """Writes made inside the block raise SendTooLate past `deadline` (time.monotonic())."""
    token = _SEND_BY.set(deadline)
    try:
        yield
    finally:
        _SEND_BY.reset(token)


class GuardedStream(httpcore.NetworkStream):
    """A stream whose writes respect the send deadline; TLS keeps the guard."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        self.tls = False

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        deadline = _SEND_BY.get()
        if deadline is not None and time.monotonic() > deadline:
            self.close()
            raise SendTooLate(f"{time.monotonic() - deadline:.3f} s past the send deadline")
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        if self.tls:  # prepared: the handshake is done already
            return self
        wrapped = GuardedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))
        wrapped.tls = True
        return wrapped

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def usable(self) -> bool:
        """Still open, and the server has sent nothing: an idle connection the server closed
        reads as readable. Over TLS 1.3 the server's session tickets make it readable too,
        so a readable TLS socket is read without blocking: no application data means usable."""
        if not self._inner.get_extra_info("is_readable"):
            return True
        sock = self._inner.get_extra_info("socket")
        if not self.tls or sock is None:
            return False
        timeout = sock.gettimeout()
        sock.settimeout(0)
        try:
            sock.recv(1)  # data or b"" (closed): either way not for a new request
        except ssl.SSLWantReadError:
            return True  # only TLS records of its own (session tickets)
        except OSError:
            pass
        finally:
            sock.settimeout(timeout)
        return False


class PreparingBackend(httpcore.NetworkBackend):
    """connect_tcp hands out a connection prepared for that host and port, if it is still
    good; otherwise it connects as usual."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.SyncBackend()
        self._ready: dict[tuple[str, int], GuardedStream] = {}
        self._lock = threading.Lock()
        self.fresh_connects = 0  # connections opened at the request, not prepared

    def prepare(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None, timeout: float | None
    ) -> None:
        """Open (and with `ssl_context`, TLS-wrap) a connection now, for the next request."""
        stream = GuardedStream(self._inner.connect_tcp(host, port, timeout=timeout))
        if ssl_context is not None:
            try:
                stream = stream.start_tls(ssl_context, host, timeout)  # type: ignore[assignment]
            except BaseException:
                stream.close()
                raise
        with self._lock:
            old, self._ready[(host, port)] = self._ready.get((host, port)), stream
        if old is not None:
            old.close()

    def ready(self, host: str, port: int) -> bool:
        """Whether a usable prepared connection waits for this host and port."""
        with self._lock:
            stream = self._ready.get((host, port))
        return stream is not None and stream.usable()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        with self._lock:
            stream = self._ready.pop((host, port), None)
        if stream is not None:
            if stream.usable():
                return stream
            stream.close()
        self.fresh_connects += 1
        return GuardedStream(
            self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return GuardedStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)

    def close(self) -> None:
        """Close every prepared connection."""
        with self._lock:
            streams, self._ready = list(self._ready.values()), {}
        for stream in streams:
            stream.close()


class PreparedTransport(httpx.HTTPTransport):
    """httpx's HTTP/1.1 transport on a PreparingBackend, keeping no idle connections."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.ssl_context = ssl_context or httpx.create_ssl_context()
        # httpcore sets ALPN on the context it is given; a prepared handshake must offer
        # the same, so set it once here.
        self.ssl_context.set_alpn_protocols(["http/1.1"])
        self.backend = PreparingBackend()
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=self.ssl_context,
            max_keepalive_connections=0,
            network_backend=self.backend,
        )

    def prepare(self, url: httpx.URL, timeout: float | None) -> None:
        """Open the connection the next request to `url` will use."""
        tls = self.ssl_context if url.scheme == "https" else None
        port = url.port or (443 if url.scheme == "https" else 80)
        self.backend.prepare(url.host, port, tls, timeout)

    def close(self) -> None:
        self.backend.close()
        super().close()
