"""A callback receiver for the demo and the tests: checks each POST's signature the way the
README tells a caller to, keeps what arrived, and answers as scripted.

`python -m worker.dev.callback_receiver --port P` prints every event it receives (the
secret comes from SPDIST_CALLBACK_SECRET).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One POST as it arrived."""

    body: bytes
    signature: str | None
    delivery: str | None
    verified: bool

    @property
    def event(self) -> str:
        return str(json.loads(self.body)["event"])

    @property
    def distribution(self) -> dict[str, Any]:
        return dict(json.loads(self.body)["distribution"])


@dataclass
class Script:
    """How to answer: the statuses of the first POSTs in turn (then `then`); `hang_s` > 0
    sleeps that long before answering (a receiver that never answers in time)."""

    statuses: list[int] = field(default_factory=list)
    then: int = 200
    hang_s: float = 0.0


class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread."""

    def __init__(
        self,
        secret: str,
        script: Script | None = None,
        port: int = 0,
        on_event: Callable[[Received], None] | None = None,
    ) -> None:
        self.secret = secret.encode()
        self.script = script or Script()
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.on_event = on_event
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def verify(self, body: bytes, header: str | None) -> bool:
        """The README's check: sha256= and the hex HMAC of the raw body, compared in
        constant time."""
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        return header is not None and hmac.compare_digest(expected, header)

    def answer(self, body: bytes, headers: Any) -> int:
        signature = headers.get("X-Spdist-Signature")
        got = Received(
            body, signature, headers.get("X-Spdist-Delivery"), self.verify(body, signature)
        )
        with self.lock:
            n = len(self.received)
            self.received.append(got)
        if self.on_event is not None:
            self.on_event(got)
        if self.script.hang_s:
            time.sleep(self.script.hang_s)
        if not got.verified:
            return 401
        return self.script.statuses[n] if n < len(self.script.statuses) else self.script.then

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.answer(body, self.headers)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the deliverer gave up waiting
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        return Handler


def show(got: Received) -> None:
    """One line per event: what it says, and whether its signature checked out."""
    d = got.distribution
    mark = "signature ok" if got.verified else "BAD SIGNATURE"
    print(
        f"callback  {got.event:<24} {d['id'][:8]} upload {d['uploadId'][-6:]}  ({mark})", flush=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    with Receiver(os.environ["SPDIST_CALLBACK_SECRET"], port=args.port, on_event=show) as r:
        print(f"receiving on {r.url}", flush=True)
        r.thread.join()


if __name__ == "__main__":
    main()
