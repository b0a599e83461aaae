"""Network between the parts, with its faults: a TCP proxy that cuts connections, a TLS
front whose set-up is slow and which closes idle connections."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from worker.dev.servers import free_port


def _nothing() -> None:
    return None


def _pipe(src: socket.socket, dst: socket.socket, on_data: Callable[[], None] = _nothing) -> None:
    """Copy src to dst until either end closes, then close both."""
    try:
        while data := src.recv(65536):
            on_data()
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `cut()` refuses new and drops live connections."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        """Listen again."""
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(128)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and reset every live one."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                c.close()

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


class TlsFront:
    """A TLS front for a local plain-HTTP server, as a CDN or load balancer would be: each
    connection's set-up (before the TLS handshake completes) takes a random time in
    `setup_s`, and a connection idle for `idle_close_s` (no request waiting for its answer,
    no answer's bytes meanwhile) is closed. Its certificate comes
    from a throw-away CA whose file `ca_path` a client trusts through SSL_CERT_FILE."""

    def __init__(
        self,
        target_port: int,
        folder: Path,
        *,
        setup_s: tuple[float, float] = (0, 0.05),
        idle_close_s: float = 1.0,
        seed: int = 7,
    ) -> None:
        import random
        import ssl

        import trustme

        ca = trustme.CA()
        self.ca_path = folder / f"front-ca-{target_port}.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(self._ctx)
        self.target = ("127.0.0.1", target_port)
        self.setup_s, self.idle_close_s = setup_s, idle_close_s
        self._random = random.Random(seed)
        self.connections = 0
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/pixelStripeApi") -> str:
        """The front's base URL."""
        return f"https://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            delay = self._random.uniform(*self.setup_s)
            threading.Thread(target=self._serve, args=(client, delay), daemon=True).start()

    def _serve(self, client: socket.socket, delay: float) -> None:
        import ssl

        time.sleep(delay)  # the handshake's answer waits: the client's set-up takes this long
        try:
            client.settimeout(10)
            tls = self._ctx.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(self.target, timeout=5)
        except (OSError, ssl.SSLError):
            client.close()
            return
        idle = _Idle()
        tls.settimeout(_IDLE_TICK_S)
        threading.Thread(target=_pipe, args=(upstream, tls, idle.answered), daemon=True).start()
        try:
            while True:
                try:
                    data = tls.recv(65536)
                except TimeoutError:
                    if idle.seconds() >= self.idle_close_s:
                        break  # idle too long: close, as a load balancer does
                    continue
                if not data:
                    break
                idle.asked()
                upstream.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for s in (tls, upstream):
                with contextlib.suppress(OSError):
                    s.close()


_IDLE_TICK_S = 0.05


class _Idle:
    """How long a front's connection has been idle: since its last answer's bytes (or its
    set-up), and never while a request waits for its answer (a slow origin is not idle)."""

    def __init__(self) -> None:
        self._since: float | None = time.monotonic()

    def asked(self) -> None:
        self._since = None

    def answered(self) -> None:
        self._since = time.monotonic()

    def seconds(self) -> float:
        since = self._since
        return 0.0 if since is None else time.monotonic() - since
