"""The demo's CI/CD story (README, Callbacks; Hold and release; Rollback), next to the
sample stream: Streampixel approves an upload, spdist holds it, a scripted validation
releases it, it is distributed and confirmed, and the demo's receiver prints the signed
callbacks; then a second upload goes the same way and the project is rolled back to the
first.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from worker.dev.callback_receiver import Received, Receiver
from worker.dev.stack import Stack

USER = "5eed0000000000000000000a"
PROJECT = "0c0000000000000000000001"
UPLOADS = ("0c00000000000000000000a1", "0c00000000000000000000a2")
SECRET = "demo-callback-secret"
SHOWN = {"held", "queued", "dispatching", "succeeded", "confirmed", "failed", "dead"}


def env(receiver: Receiver) -> dict[str, str]:
    """What the stack needs for the story: auto-distribution of the project, held for a
    release, with callbacks to the demo's receiver."""
    return {
        "SPDIST_AUTO_DISTRIBUTE": f'{{"{PROJECT}": "{USER}"}}',
        "SPDIST_HOLD_PROJECTS": PROJECT,
        "SPDIST_CALLBACK_HOSTS": receiver.host,
        "SPDIST_CALLBACK_SECRET": SECRET,
        "SPDIST_AUTO_CALLBACK_URL": receiver.url,
    }


class Pipeline:
    """Plays Streampixel's `build.approved` and the caller's validation, and narrates."""

    def __init__(self, stack: Stack, http: httpx.Client, hook_path: str) -> None:
        self.stack, self.http, self.hook_path = stack, http, hook_path

    def say(self, line: str) -> None:
        self.stack.say("pipeline", line)

    def on_callback(self, got: Received) -> None:
        """The receiver's report of one callback (it checked the signature first)."""
        d = got.distribution
        mark = "signature ok" if got.verified else "BAD SIGNATURE"
        self.say(
            f"callback received: {got.event} for {d['id'][:8]} (upload …{d['uploadId'][-2:]},"
            f" {mark})"
        )

    def run(self) -> None:
        """The whole flow for two uploads, then a rollback to the first."""
        try:
            self._wait_ready()
            for upload in UPLOADS:
                if not self._release_flow(upload):
                    return
            self._rollback()
            self.say(
                "the whole flow is done: approved -> held -> validated -> released -> "
                "distributed -> confirmed, with callbacks; then a rollback"
            )
        except httpx.HTTPError as exc:
            self.say(f"stopped: {exc}")

    def _release_flow(self, upload: str) -> bool:
        self.say(
            f"Streampixel: build.approved for upload …{upload[-2:]} of project "
            f"{PROJECT[:6]}… (webhook)"
        )
        hook = {
            "event": "build.approved",
            "projectId": PROJECT,
            "uploadId": upload,
            "status": "approved",
        }
        self.http.post(self.hook_path, json=hook).raise_for_status()
        held = self._wait(upload, {"held"})
        if held is None:
            return False
        self.say(f"spdist: request {held['id'][:8]} is held (SPDIST_HOLD_PROJECTS): in no lane")
        self.say(f"validation: smoke tests and asset scan of upload …{upload[-2:]} pass")
        self.stack.stopping.wait(1.0)
        r = self.http.post(f"/v1/distributions/{held['id']}/release")
        r.raise_for_status()
        self.say(
            f"validation: POST /v1/distributions/{held['id'][:8]}…/release -> {r.json()['state']}"
        )
        return self._follow(held["id"]) == "confirmed"

    def _wait_ready(self) -> None:
        while not self.stack.stopping.is_set():
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            self.stack.stopping.wait(0.3)

    def _rollback(self) -> None:
        self.say(
            f"operator: POST /v1/projects/{PROJECT[:6]}…/rollback (back from …{UPLOADS[1][-2:]})"
        )
        r = self.http.post(f"/v1/projects/{PROJECT}/rollback", json={})
        r.raise_for_status()
        d = r.json()
        self.say(
            f"spdist: rollback {d['id'][:8]} to upload …{d['uploadId'][-2:]}, priority "
            f"{d['priority']}: {d.get('message') or ''}"
        )
        self._follow(d["id"])

    def _follow(self, request_id: str) -> str | None:
        """Print each state the request goes through until it is final."""
        seen = None
        while not self.stack.stopping.is_set():
            d = self.http.get(f"/v1/distributions/{request_id}").json()
            if d["state"] != seen:
                seen = d["state"]
                if seen in SHOWN:
                    self.say(f"spdist: {request_id[:8]} {seen}")
            if seen in ("confirmed", "failed", "dead", "cancelled", "superseded"):
                return str(seen)
            time.sleep(0.2)
        return None

    def _wait(self, upload: str, states: set[str]) -> dict[str, Any] | None:
        while not self.stack.stopping.is_set():
            items = self.http.get("/v1/distributions", params={"projectId": PROJECT}).json()
            for d in items["items"]:
                if d["uploadId"] == upload and d["state"] in states:
                    return dict(d)
            time.sleep(0.2)
        return None
