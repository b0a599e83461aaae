"""`spdist demo`: the whole stack against the built-in fake Streampixel, fed with samples.

Three users, two projects each, a 3-second interval. One upload first answers 400 "File
has no URL" (then its `build.approved` webhook brings it forward), one answers 500 once
(then retries); every success is confirmed by the fake's `build.distributing` webhook.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from worker.dev import pipeline
from worker.dev.callback_receiver import Receiver
from worker.dev.stack import PY, Stack, ensure_redis, ports, ports_free, start_services
from worker.redis_url import sync_client, with_db

INTERVAL_S = 3.0
TOKEN, HOOK = "demo-token", "demo-hook"
USERS = [f"5eed000000000000000000{i:02x}" for i in range(1, 4)]
KEYS = {u: f"demo-key-{i}" for i, u in enumerate(USERS, start=1)}
NO_URL, FLAKY = "0a0000000000000000000001", "0b0000000000000000000001"
FINAL = {"confirmed", "failed", "dead", "cancelled", "superseded"}


def samples() -> list[dict[str, Any]]:
    """(user, project, upload) triples: two uploads per project, the scripted ones first."""
    out = []
    for n in range(2):
        for u, user in enumerate(USERS):
            for p in range(2):
                upload = f"{u + 1:02x}{p + 1:02x}{n + 1:02x}" + "c" * 18
                out.append(
                    {
                        "userId": user,
                        "projectId": f"{u + 1:02x}{p + 1:02x}" + "f" * 20,
                        "uploadId": upload,
                        "coalesce": False,
                    }
                )
    out[0]["uploadId"], out[1]["uploadId"] = NO_URL, FLAKY
    return out


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_redis_url(url: str) -> str:
    """The configured Redis server, database 15: the demo's lanes stay out of real ones."""
    return with_db(url, 15)


def run(folder: Path) -> int:
    """Run until Ctrl-C; the SQLite database and Redis data live in `folder`."""
    from worker.migrate import upgrade
    from worker.settings import get_settings

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spdist.db").unlink(missing_ok=True)
    settings = get_settings()
    redis_url, master = demo_redis_url(settings.redis_url), settings.redis_master_name
    api_port, flower_port = ports()
    fake_port = free_port()
    receiver = Receiver(pipeline.SECRET)  # the demo's callback receiver (worker/dev/pipeline.py)
    env = {**_env(folder, redis_url, api_port, fake_port), **pipeline.env(receiver)}
    if master:
        env["SPDIST_REDIS_MASTER_NAME"] = master
    stack = Stack(env, hide=_noise)
    if not ensure_redis(stack, redis_url, folder / "redis", master):
        return 1
    _flush(redis_url, master)
    upgrade(env["SPDIST_DATABASE_URL"])
    (folder / "keys.json").write_text(json.dumps(KEYS | {pipeline.USER: "demo-key-pipeline"}))
    if not ports_free(stack, api_port, flower_port):
        return 1
    hook_url = f"http://127.0.0.1:{api_port}/v1/webhooks/streampixel/{HOOK}"
    stack.start(
        "fake",
        [
            PY,
            "-m",
            "worker.dev.fake_streampixel",
            "--port",
            str(fake_port),
            "--interval",
            str(INTERVAL_S),
            "--keys-file",
            str(folder / "keys.json"),
            "--webhook-url",
            hook_url,
        ],
    )
    start_services(stack, api_port, flower_port)
    feeder = Feeder(stack, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{fake_port}")
    threading.Thread(target=feeder.run, daemon=True).start()
    story = pipeline.Pipeline(stack, feeder.http, f"/v1/webhooks/streampixel/{HOOK}")
    receiver.on_event = story.on_callback
    receiver.thread.start()
    threading.Thread(target=story.run, daemon=True).start()
    _hints(stack, env, api_port, flower_port)
    return stack.run()


NOISE = (
    "spdist.reconcile",
    "due task reconcile",
    "spdist.housekeep",
    "due task housekeep",
    '"GET /',
    "_warn_or_raise_security_error",
    "SecurityWarning",
    "running the worker with superuser",
    "HTTP Request: POST",
    "Inspect method",
    "'celery.",
    "absolutely not recommended",
    "--uid option",
    "User information: uid",
    "] received",
)


def _noise(line: str) -> bool:
    """Lines that would drown the story: the reconciler's ticks, the feeder's polling."""
    return any(n in line for n in NOISE)


def _env(folder: Path, redis_url: str, api_port: int, fake_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPDIST_")}
    env.update(
        SPDIST_DATABASE_URL=f"sqlite:///{(folder / 'spdist.db').resolve()}",
        SPDIST_REDIS_URL=redis_url,
        SPDIST_STREAMPIXEL_URL=f"http://127.0.0.1:{fake_port}/pixelStripeApi",
        SPDIST_API_KEYS=json.dumps(KEYS | {pipeline.USER: "demo-key-pipeline"}),
        SPDIST_MIN_INTERVAL_S=str(INTERVAL_S),
        SPDIST_API_TOKENS=f"demo={TOKEN}",
        SPDIST_OPERATORS="demo",  # so the console opens with the demo's token
        SPDIST_WEBHOOK_TOKEN=HOOK,
        SPDIST_RECONCILE_EVERY_S="1",
        SPDIST_BACKOFF_BASE_S="20",
        SPDIST_TRANSIENT_BACKOFF_BASE_S="4",
        # A busy laptop delays some sends by tens of ms; the default guard (0.4 % of the
        # interval, 12 ms here) is sized for 120 s, so give the short demo interval more.
        SPDIST_PACER_GUARD_S="0.25",
        SPDIST_API_PORT=str(api_port),
    )
    return env


def _flush(redis_url: str, master_name: str | None) -> None:
    client = sync_client(redis_url, master_name)
    try:
        client.flushdb()
    finally:
        client.close()


def _hints(stack: Stack, env: dict[str, str], api_port: int, flower_port: int) -> None:
    db, rurl = env["SPDIST_DATABASE_URL"], shlex.quote(env["SPDIST_REDIS_URL"])
    if "SPDIST_REDIS_MASTER_NAME" in env:
        rurl += f" SPDIST_REDIS_MASTER_NAME={shlex.quote(env['SPDIST_REDIS_MASTER_NAME'])}"
    for line in (
        f"demo: interval {INTERVAL_S:g} s per user; users {', '.join(USERS)}",
        f"demo: API http://127.0.0.1:{api_port}/docs (token {TOKEN}) · "
        f"console http://127.0.0.1:{api_port}/ui/ · Flower http://127.0.0.1:{flower_port}",
        f"demo: in another shell: SPDIST_DATABASE_URL={db} SPDIST_REDIS_URL={rurl} "
        f"SPDIST_MIN_INTERVAL_S={env['SPDIST_MIN_INTERVAL_S']} "
        f"SPDIST_PACER_GUARD_S={env['SPDIST_PACER_GUARD_S']} ./dev spdist lanes --watch",
        f"demo: curl -H 'Authorization: Bearer {TOKEN}' "
        f"http://127.0.0.1:{api_port}/v1/users/{USERS[0]}/lane",
        "demo: Ctrl-C stops everything",
    ):
        stack.say("demo", line)


class Feeder:
    """Posts the samples, plays Streampixel's build.approved, reports progress."""

    def __init__(self, stack: Stack, api: str, fake: str) -> None:
        self.stack, self.api, self.fake = stack, api, fake
        self.http = httpx.Client(
            base_url=api, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        self.approved = False
        self.last_report = 0.0

    def run(self) -> None:
        """Feed, then report every few seconds until every sample is final."""
        try:
            self._wait_ready()
            self._script_fake()
            for body in samples():
                self._post(body)
                self._report_if_due()
                time.sleep(0.7)
            while not self.stack.stopping.is_set() and not self._report():
                self.stack.stopping.wait(4)
            self.stack.say("demo", "every sample request is final; Ctrl-C to stop the stack")
        except httpx.HTTPError as exc:
            self.stack.say("demo", f"feeder stopped: {exc}")

    def _wait_ready(self) -> None:
        while not self.stack.stopping.is_set():
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)

    def _script_fake(self) -> None:
        rules = {
            NO_URL: [{"status": 400, "message": "File has no URL"}],
            FLAKY: [{"status": 500, "message": "Internal server error"}],
        }
        httpx.post(f"{self.fake}/_control/config", json={"rules": rules}).raise_for_status()

    def _post(self, body: dict[str, Any]) -> None:
        d = self.http.post("/v1/distributions", json=body).json()
        self.stack.say(
            "demo",
            f"POST /v1/distributions user …{body['userId'][-2:]} "
            f"upload {body['uploadId'][:6]}… -> {d['state']} "
            f"#{d['position']} eta {d['estimatedDispatchAt']}",
        )

    def _report_if_due(self) -> None:
        if time.monotonic() - self.last_report > 4:
            self._report()

    def _report(self) -> bool:
        """Print states and lanes; True when every sample is final."""
        self.last_report = time.monotonic()
        items = self.http.get("/v1/distributions", params={"limit": 100}).json()["items"]
        self._approve_if_waiting(items)
        states = Counter(d["state"] for d in items)
        lanes = [self.http.get(f"/v1/users/{u}/lane").json() for u in USERS]
        waits = " ".join(f"…{lane['userId'][-2:]}:{len(lane['items'])}" for lane in lanes)
        self.stack.say("demo", f"states {dict(sorted(states.items()))} · waiting per user {waits}")
        return bool(items) and set(states) <= FINAL

    def _approve_if_waiting(self, items: list[dict[str, Any]]) -> None:
        """Play Streampixel: the build that had no URL is approved now."""
        for d in items:
            if d["uploadId"] == NO_URL and d["state"] == "retrying" and not self.approved:
                self.approved = True
                body = {
                    "event": "build.approved",
                    "projectId": d["projectId"],
                    "uploadId": NO_URL,
                    "status": "Approved",
                }
                self.http.post(f"/v1/webhooks/streampixel/{HOOK}", json=body)
                self.stack.say(
                    "demo",
                    f"webhook build.approved for {NO_URL[:6]}… "
                    "(it waited on 'no URL'): brought forward",
                )
