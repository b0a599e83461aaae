"""A local fake of Streampixel's distribute-file endpoint: strict per-user pacing, scripted faults.

Used by integration tests, fault-injection system tests, benchmarks and ``spdist demo``.
The server is standard library only; httpx posts webhooks and serves :func:`fetch_calls`.

Control API (JSON) on the same server:
    GET  /_control/calls    -> {"calls": [...]}
    POST /_control/reset    -> clears calls, rules and per-user windows
    POST /_control/config   -> merges {"interval_s", "keys", "rules", "repeat_last",
                               "force_429_next", "webhook_url", "webhook_delay_s"}
    GET  /_control/health   -> {"ok": true}

What it answers (`worker.dev.fake_rules.Judge`), in this order: 415 wrong content type, 400
missing field, 401 key mismatch, 429 *violation* (the previous call of that userId arrived
less than ``interval_s`` ago; every call that gets this far restarts the window, 429s
included), a forced 429, a scripted answer (by uploadId, else the "default" queue), and
finally 200 "Distribution triggered".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import socketserver
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from worker.dev.fake_rules import (
    API_PREFIX,
    CONTROL_PREFIX,
    DISTRIBUTE_PATH,
    Judge,
    deliver_webhook,
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API behind its proxy
    # Headers and body go out in two writes: with Nagle's algorithm each answer would
    # wait for the client's delayed ACK (about 40 ms).
    disable_nagle_algorithm = True
    server_version = "FakeStreampixel/1.0"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.fake.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == f"{CONTROL_PREFIX}/calls":
            self._json(200, {"calls": self.server.fake.calls()})
        elif path == f"{CONTROL_PREFIX}/health":
            self._json(200, {"ok": True})
        else:
            self._json(404, {"message": "Not found"})

    def do_POST(self) -> None:
        raw = self._body()
        path = urlsplit(self.path).path
        if path == DISTRIBUTE_PATH:
            self._distribute(raw)
        elif path == f"{CONTROL_PREFIX}/reset":
            self.server.fake.reset()
            self._json(200, {"ok": True})
        elif path == f"{CONTROL_PREFIX}/config":
            try:
                self.server.fake.configure(**json.loads(raw or b"{}"))
            except (ValueError, TypeError) as exc:
                self._json(400, {"message": str(exc)})
            else:
                self._json(200, {"ok": True})
        else:
            self._json(404, {"message": "Not found"})

    def _distribute(self, raw: bytes) -> None:
        fake = self.server.fake
        answer = fake._judge.judge(self.headers.get("Content-Type", ""), raw)
        if answer.status is None:
            # SO_LINGER 0 makes close() send RST: the client sees a reset, not a clean EOF.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if answer.hang_s and fake._stopping.wait(answer.hang_s):
            self.close_connection = True
            return
        self._send(answer.status, answer.body, answer.content_type)
        if answer.webhook:
            threading.Thread(
                target=deliver_webhook,
                args=(*answer.webhook, fake._stopping),
                name="fake-streampixel-webhook",
                daemon=True,
            ).start()

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str | None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeStreampixel) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves our own FQDN, which can stall on a slow resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]  # type: ignore[assignment]

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def drop_connections(self) -> None:
        """Wake idle keep-alive handlers so their threads close their sockets."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up mid-answer are expected in fault tests.
        if self.fake.verbose:
            super().handle_error(request, client_address)


class FakeStreampixel:
    """A local distribute-file server that enforces the per-user interval strictly."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        interval_s: float = 1.0,
        keys: dict[str, str] | None = None,
        webhook_url: str | None = None,
        verbose: bool = False,
    ) -> None:
        self._address = (host, port)
        self._judge = Judge(interval_s, keys, webhook_url)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.verbose = verbose

    def start(self) -> FakeStreampixel:
        """Serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeStreampixel already started")
        self._stopping.clear()
        self._server = _Server(self._address, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-streampixel", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and drop open connections."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeStreampixel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        """``http://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError("FakeStreampixel is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        """Base URL to give the client (what SPDIST_STREAMPIXEL_URL takes)."""
        return self.origin + API_PREFIX

    @property
    def control_url(self) -> str:
        """Base URL of the control API."""
        return self.origin + CONTROL_PREFIX

    def calls(self) -> list[dict[str, Any]]:
        """Every call so far, oldest first (copies; no apiKey)."""
        with self._judge.lock:
            return [dict(call) for call in self._judge.calls]

    def configure(self, **kw: Any) -> None:
        """Merge settings; same keys as POST /_control/config."""
        self._judge.configure(kw)

    def reset(self) -> None:
        """Forget calls, rules, forced 429s and per-user windows."""
        self._judge.reset()


def fetch_calls(base_or_control_url: str) -> list[dict[str, Any]]:
    """The call record of a fake running elsewhere, given its base or control URL."""
    parts = urlsplit(base_or_control_url)
    with httpx.Client(timeout=10.0) as client:
        answer = client.get(f"{parts.scheme}://{parts.netloc}{CONTROL_PREFIX}/calls")
        answer.raise_for_status()
        calls: list[dict[str, Any]] = answer.json()["calls"]
        return calls


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m worker.dev.fake_streampixel",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds per userId")
    parser.add_argument("--keys-file", type=Path, help="JSON object {userId: apiKey}")
    parser.add_argument("--webhook-url")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    keys = json.loads(args.keys_file.read_text()) if args.keys_file else None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake = FakeStreampixel(
        host=args.host,
        port=args.port,
        interval_s=args.interval,
        keys=keys,
        webhook_url=args.webhook_url,
        verbose=args.verbose,
    )
    with fake:
        print(f"fake streampixel listening on {fake.url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
