"""`spdist demo` goes through the whole CI/CD flow: build.approved -> held -> validation
releases it -> distributed -> build.distributing -> confirmed, with signed callbacks the
demo's receiver checked, then a rollback to the earlier upload."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_api import free_port
from tests.integration.test_stack import start_up
from worker.dev.procs import wait_for

pytestmark = pytest.mark.integration
DONE = "the whole flow is done"


def test_demo_runs_the_whole_flow(redis_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPDIST_")}
    env.update(
        SPDIST_REDIS_URL=redis_url,
        SPDIST_API_PORT=str(free_port()),
        SPDIST_FLOWER_PORT=str(free_port()),
        SPDIST_DEMO_DIR=str(tmp_path / "demo"),
    )
    proc, log = start_up(env, tmp_path, command="demo")
    try:
        wait_for(lambda: proc.poll() is not None or DONE in log.read_text(), 240, "the demo flow")
        out = log.read_text()
        assert DONE in out, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    story = [line.split("| ", 1)[1] for line in out.splitlines() if line.startswith("pipeline")]
    first = next(s.split()[2] for s in story if "is held" in s)
    expected = [
        "build.approved for upload …a1",
        f"request {first} is held",
        f"/v1/distributions/{first}…/release -> queued",
        f"{first} succeeded",
        f"{first} confirmed",
        "build.approved for upload …a2",
        "/rollback (back from …a2)",
        "rollback",
        DONE,
    ]
    at = 0
    for want in expected:  # in this order
        at = next(i for i in range(at, len(story)) if want in story[i]) + 1
    callbacks = [s for s in story if s.startswith("callback received")]
    for event in ("distribution.succeeded", "distribution.confirmed"):
        assert any(f"{event} for {first}" in s and "signature ok" in s for s in callbacks), story
    assert not any("BAD SIGNATURE" in s for s in callbacks)
    assert "demo-callback-secret" not in out
