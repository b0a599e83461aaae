"""A local fake of Streampixel's distribute-file endpoint: strict per-user pacing, scripted faults.

Used by integration tests, fault-injection system tests, benchmarks and ``spdist demo``.
The server is standard library only; httpx posts webhooks and serves :func:`fetch_calls`.

Control API (JSON) on the same server:
    GET  /_control/calls    -> {"calls": [...]}
    POST /_control/reset    -> clears calls, rules and per-user windows
    POST /_control/config   -> merges {"interval_s", "keys", "rules", "repeat_last",
                               "force_429_next", "webhook_url", "webhook_delay_s"}
    GET  /_control/health   -> {"ok": true}

A call is judged in this order: 415 wrong content type, 400 missing field, 401 key mismatch,
429 *violation* (the previous call of that userId arrived less than ``interval_s`` ago; every
call that gets this far restarts the window, 429s included), a forced 429, a scripted answer
(by uploadId, else the "default" queue), and finally 200 "Distribution triggered".
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
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

API_PREFIX = "/pixelStripeApi"
DISTRIBUTE_PATH = f"{API_PREFIX}/projects/distribute-file"
CONTROL_PREFIX = "/_control"
REQUIRED_FIELDS = ("apiKey", "userId", "projectId", "uploadId")
TRIGGERED = "Distribution triggered"
RATE_LIMITED = "Rate limit exceeded. Try again in 2 minutes."


def rate_limited_message(interval_s: float) -> str:
    """Streampixel's 429 text, stating this fake's own interval as the wait."""
    if interval_s == 120:
        return RATE_LIMITED
    return f"Rate limit exceeded. Try again in {interval_s:g} seconds."


CONFIG_KEYS = frozenset({"interval_s", "keys", "rules", "repeat_last", "force_429_next"}).union(
    {"webhook_url", "webhook_delay_s"}
)
ACTIONS = frozenset({"status", "hang", "reset", "garbage", "html", "empty", "ratelimit"})
_EDGE_HTML = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_WEBHOOK_TIMEOUT_S = 10.0  # what Streampixel documents for its own deliveries


@dataclass
class _Answer:
    """What to send back; decided under the lock, sent outside it."""

    status: int | None  # None: reset the connection without answering
    body: bytes = b""
    content_type: str | None = None
    outcome: str = "triggered"
    violation: bool = False
    action: str | None = None  # the scripted action, if one answered
    hang_s: float = 0.0
    webhook: tuple[str, float, dict[str, Any]] | None = None  # (url, delay_s, event)


def _message(status: int, message: str, outcome: str, **kw: Any) -> _Answer:
    body = json.dumps({"message": message}).encode()
    return _Answer(status, body, "application/json", outcome, **kw)


def _scripted(action: dict[str, Any], interval_s: float = 120.0) -> _Answer:
    kind = action.get("action", "status")
    if kind == "hang":
        return _message(200, TRIGGERED, "scripted", action=kind, hang_s=float(action["seconds"]))
    if kind == "reset":
        return _Answer(None, outcome="scripted", action=kind)
    if kind == "garbage":
        return _Answer(200, b"<<garbage>>", "text/plain", "scripted", action=kind)
    if kind == "html":
        code = int(action.get("status", 502))
        page = _EDGE_HTML.format(code=code, reason=action.get("reason", "Bad Gateway"))
        return _Answer(code, page.encode(), "text/html", "scripted", action=kind)
    if kind == "empty":
        return _Answer(int(action.get("status", 503)), outcome="scripted", action=kind)
    if kind == "ratelimit":  # another tool spent the budget: a 429 we did not cause
        return _message(429, rate_limited_message(interval_s), "scripted", action=kind)
    return _message(int(action["status"]), str(action.get("message", "")), "scripted", action=kind)


def _check_action(action: Any) -> None:
    if not isinstance(action, dict) or action.get("action", "status") not in ACTIONS:
        raise ValueError(f"unknown scripted action: {action!r}")
    if action.get("action", "status") == "status" and "status" not in action:
        raise ValueError(f"a status rule needs a 'status': {action!r}")
    if action.get("action") == "hang" and "seconds" not in action:
        raise ValueError(f"a hang rule needs 'seconds': {action!r}")


def _parse(content_type: str, raw: bytes) -> tuple[dict[str, Any], _Answer | None]:
    """The request's JSON object, or the 415/400 answer it deserves."""
    if content_type.split(";")[0].strip().lower() != "application/json":
        return {}, _message(415, "Unsupported Media Type", "unsupported_media_type")
    try:
        data = json.loads(raw)
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    for name in REQUIRED_FIELDS:
        if not isinstance(data.get(name), str) or not data[name]:
            return data, _message(400, f"Missing required field: {name}", "bad_request")
    return data, None


def _text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) else None


class _State:
    """Configuration, scripted rules, per-user windows and the call record, under one lock."""

    def __init__(self, interval_s: float, keys: dict[str, str] | None, webhook_url: str | None):
        self.lock = threading.Lock()
        self.interval_s = interval_s
        self.keys = dict(keys) if keys is not None else None
        self.webhook_url = webhook_url
        self.webhook_delay_s = 0.2
        self.repeat_last = False
        self.force_429_next = 0
        self.rules: dict[str, list[dict[str, Any]]] = {}
        self.last_mono: dict[str, float] = {}
        self.calls: list[dict[str, Any]] = []

    def configure(self, cfg: dict[str, Any]) -> None:
        unknown = set(cfg) - CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        rules = cfg.get("rules") or {}
        if not isinstance(rules, dict) or not all(isinstance(v, list) for v in rules.values()):
            raise ValueError("rules must map an uploadId or 'default' to a list of actions")
        for actions in rules.values():
            for action in actions:
                _check_action(action)
        with self.lock:
            for key, value in cfg.items():
                if key == "rules":
                    self.rules.update({k: [dict(a) for a in v] for k, v in rules.items()})
                elif key == "keys":
                    self.keys = dict(value) if value is not None else None
                elif key in ("interval_s", "webhook_delay_s"):
                    setattr(self, key, float(value))
                elif key == "force_429_next":
                    self.force_429_next = int(value)
                elif key == "repeat_last":
                    self.repeat_last = bool(value)
                else:
                    self.webhook_url = value

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.rules.clear()
            self.last_mono.clear()
            self.force_429_next = 0

    def judge(self, content_type: str, raw: bytes) -> _Answer:
        """Decide one call's answer and record it; arrivals are judged in lock order."""
        with self.lock:
            wall, mono = time.time(), time.monotonic()
            data, answer = _parse(content_type, raw)
            user, key = _text(data, "userId"), _text(data, "apiKey")
            last = self.last_mono.get(user) if user is not None else None
            key_ok = key is not None and (self.keys is None or self.keys.get(user or "") == key)
            if answer is None and not key_ok:
                answer = _message(401, "Unauthorized: Invalid API Key", "unauthorized")
            if answer is None:
                answer = self._limit(data, mono, last)
            self.calls.append(
                {
                    "seq": len(self.calls) + 1,
                    "wall": wall,
                    "mono": mono,
                    "userId": user,
                    "projectId": _text(data, "projectId"),
                    "uploadId": _text(data, "uploadId"),
                    "keyOk": key_ok,
                    "status": answer.status,
                    "outcome": answer.outcome,
                    "action": answer.action,
                    "violation": answer.violation,
                    "gapS": None if last is None else mono - last,
                }
            )
            return answer

    def _limit(self, data: dict[str, Any], mono: float, last: float | None) -> _Answer:
        self.last_mono[data["userId"]] = mono  # strict: every call restarts the window
        if last is not None and mono - last < self.interval_s:
            return _message(429, rate_limited_message(self.interval_s), "violation", violation=True)
        if self.force_429_next > 0:
            self.force_429_next -= 1
            return _message(429, rate_limited_message(self.interval_s), "forced_429")
        action = self._next_action(data["uploadId"])
        answer = (
            _scripted(action, self.interval_s) if action else _message(200, TRIGGERED, "triggered")
        )
        if answer.status == 200 and answer.action in (None, "hang") and self.webhook_url:
            answer.webhook = (self.webhook_url, self.webhook_delay_s, _event(data))
        return answer

    def _next_action(self, upload_id: str) -> dict[str, Any] | None:
        name = upload_id if self.rules.get(upload_id) else "default"
        queue = self.rules.get(name)
        if not queue:
            return None
        if len(queue) == 1 and self.repeat_last:
            return queue[0]
        return queue.pop(0)


def _event(data: dict[str, Any]) -> dict[str, Any]:
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "event": "build.distributing",
        "projectId": data["projectId"],
        "uploadId": data["uploadId"],
        "fileUrl": None,
        "status": "Distribute",
        "timestamp": stamp,
    }


def _deliver(url: str, delay_s: float, event: dict[str, Any], stopping: threading.Event) -> None:
    if stopping.wait(delay_s):
        return
    # Streampixel neither retries nor reports failed deliveries; nor do we.
    with contextlib.suppress(Exception):
        httpx.post(url, json=event, timeout=_WEBHOOK_TIMEOUT_S)


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
        answer = fake._state.judge(self.headers.get("Content-Type", ""), raw)
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
                target=_deliver,
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
        self._state = _State(interval_s, keys, webhook_url)
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
        with self._state.lock:
            return [dict(call) for call in self._state.calls]

    def configure(self, **kw: Any) -> None:
        """Merge settings; same keys as POST /_control/config."""
        self._state.configure(kw)

    def reset(self) -> None:
        """Forget calls, rules, forced 429s and per-user windows."""
        self._state.reset()


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
