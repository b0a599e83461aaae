"""What the fake Streampixel answers a call (`Judge`): its checks in order, the per-user
interval it enforces strictly, the scripted faults, and the webhook it sends after a
triggered distribution. The server around it is `worker.dev.fake_streampixel`."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
class Answer:
    """What to send back; decided under the lock, sent outside it."""

    status: int | None  # None: reset the connection without answering
    body: bytes = b""
    content_type: str | None = None
    outcome: str = "triggered"
    violation: bool = False
    action: str | None = None  # the scripted action, if one answered
    hang_s: float = 0.0
    webhook: tuple[str, float, dict[str, Any]] | None = None  # (url, delay_s, event)


def _message(status: int, message: str, outcome: str, **kw: Any) -> Answer:
    body = json.dumps({"message": message}).encode()
    return Answer(status, body, "application/json", outcome, **kw)


def _scripted(action: dict[str, Any], interval_s: float = 120.0) -> Answer:
    kind = action.get("action", "status")
    if kind == "hang":
        return _message(200, TRIGGERED, "scripted", action=kind, hang_s=float(action["seconds"]))
    if kind == "reset":
        return Answer(None, outcome="scripted", action=kind)
    if kind == "garbage":
        return Answer(200, b"<<garbage>>", "text/plain", "scripted", action=kind)
    if kind == "html":
        code = int(action.get("status", 502))
        page = _EDGE_HTML.format(code=code, reason=action.get("reason", "Bad Gateway"))
        return Answer(code, page.encode(), "text/html", "scripted", action=kind)
    if kind == "empty":
        return Answer(int(action.get("status", 503)), outcome="scripted", action=kind)
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


def _parse(content_type: str, raw: bytes) -> tuple[dict[str, Any], Answer | None]:
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


class Judge:
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

    def judge(self, content_type: str, raw: bytes) -> Answer:
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

    def _limit(self, data: dict[str, Any], mono: float, last: float | None) -> Answer:
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


def deliver_webhook(
    url: str, delay_s: float, event: dict[str, Any], stopping: threading.Event
) -> None:
    if stopping.wait(delay_s):
        return
    # Streampixel neither retries nor reports failed deliveries; nor do we.
    with contextlib.suppress(Exception):
        httpx.post(url, json=event, timeout=_WEBHOOK_TIMEOUT_S)
