"""Real Flower against real Redis: it shows a dispatched task, named and argued, keyless."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_api import TOKEN, free_port, start_api
from worker.dev.procs import (
    PY,
    Proc,
    configure_fake,
    spdist_env,
    start_beat,
    start_fake,
    start_worker,
    wait_for,
)

pytestmark = pytest.mark.integration
FLOWER_AUTH = ("ops", "flower-pw")
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_flower(env: dict[str, str], log_dir: Path) -> tuple[Proc, str]:
    """`spdist flower` on a free port, with basic auth; waits until it answers."""
    port = free_port()
    env = {
        **env,
        "SPDIST_FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH),
        "SPDIST_FLOWER_ADDRESS": "127.0.0.1",
    }
    proc = Proc("flower", [PY, "-m", "worker.cli", "flower", "--port", str(port)], env, log_dir)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.popen.poll() is None, proc.log()
        try:
            return httpx.get(f"{base}/api/tasks", auth=FLOWER_AUTH, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, 60, "Flower to answer")
    return proc, base


def flower_tasks(base: str, name: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{base}/api/tasks", params={"taskname": name}, auth=FLOWER_AUTH, timeout=5)
    r.raise_for_status()
    return list(r.json().values())


def mine(tasks: list[dict[str, Any]], user: str) -> list[dict[str, Any]]:
    """Finished tasks of this test's user (other suites may share the broker)."""
    return [t for t in tasks if t.get("state") == "SUCCESS" and user in str(t.get("kwargs"))]


def dispatched_in_flower(api: str, flower: str, user: str) -> dict[str, Any]:
    """Enqueue until Flower shows a finished dispatch (its event stream may start late)."""
    for n in range(3):
        body = {"userId": user, "projectId": uuid.uuid4().hex[:24], "uploadId": f"{n:024x}"}
        r = httpx.post(
            f"{api}/v1/distributions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.status_code == 202, r.text
        try:
            found = wait_for(
                lambda: mine(flower_tasks(flower, "spdist.dispatch"), user), 15, "the task"
            )
        except AssertionError:
            continue
        assert isinstance(found, list)
        return found[0]
    raise AssertionError("Flower never showed a dispatched task")


def test_flower_shows_a_dispatched_task(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    user, key = uuid.uuid4().hex[:24], "sk-flower-" + uuid.uuid4().hex
    fake, sp_url = start_fake(tmp_path, interval_s=0.5)
    env = spdist_env(pg_url, redis_url, sp_url, {user: key}, SPDIST_API_TOKENS=TOKEN)
    procs = [fake]
    try:
        flower, fbase = start_flower(env, tmp_path)
        procs.append(flower)
        procs.append(start_worker("flowerw", env, tmp_path))
        api, base = start_api(env, tmp_path)
        procs.append(api)
        assert httpx.get(f"{fbase}/api/tasks").status_code == 401  # basic auth required
        task = dispatched_in_flower(base, fbase, user)
        assert task["name"] == "spdist.dispatch"
        assert user in task["kwargs"] and "request_id" in task["kwargs"]
        assert "upload_id" in task["kwargs"] and "project_id" in task["kwargs"]
        assert key not in repr(task)
        assert "flower-pw" not in flower.log()
    finally:
        for p in procs:
            p.stop()


def _flower_task(flower: str, upload: str, state: str) -> dict[str, Any] | None:
    found = [
        t
        for t in flower_tasks(flower, "spdist.dispatch")
        if upload in str(t.get("kwargs")) and t.get("state") == state
    ]
    return found[0] if found else None


def test_flower_shows_failed_calls_readably_and_no_reconciler_ticks(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    users = [uuid.uuid4().hex[:24] for _ in range(2)]
    uploads = [uuid.uuid4().hex[:24] for _ in range(2)]
    fake, sp_url = start_fake(tmp_path, interval_s=0.5)
    keys = {u: f"sk-flower-{n}-" + uuid.uuid4().hex for n, u in enumerate(users)}
    env = spdist_env(pg_url, redis_url, sp_url, keys, SPDIST_API_TOKENS=TOKEN)
    rules = {
        uploads[0]: [{"status": 500, "message": "Internal server error"}],
        uploads[1]: [{"status": 404, "message": "Project not found"}],
    }
    configure_fake(sp_url, rules=rules)
    procs = [fake]
    try:
        flower, fbase = start_flower(env, tmp_path)
        procs += [flower, start_worker("flowerf", env, tmp_path), start_beat(env, tmp_path)]
        api, base = start_api(env, tmp_path)
        procs.append(api)
        for user, upload in zip(users, uploads, strict=True):
            body = {"userId": user, "projectId": upload, "uploadId": upload}
            r = httpx.post(f"{base}/v1/distributions", json=body, headers=AUTH)
            assert r.status_code == 202, r.text
        retried = wait_for(lambda: _flower_task(fbase, uploads[0], "RETRY"), 30, "a RETRY")
        failed = wait_for(lambda: _flower_task(fbase, uploads[1], "FAILURE"), 30, "a FAILURE")
        assert isinstance(retried, dict) and isinstance(failed, dict)
        assert "server_error: Internal server error" in retried["exception"]
        assert re.search(r"next attempt \d{4}-\d\d-\d\dT", retried["exception"])
        assert "not_found: Project not found (request failed)" in failed["exception"]
        assert re.search(r"'due': '\d{4}-\d\d-\d\dT[\d:.]+Z'", retried["kwargs"])
        assert "due_us" not in retried["kwargs"]
        # The retry is the lane's own: attempt 2 follows, as SQL decided.
        wait_for(lambda: _flower_task(fbase, uploads[0], "SUCCESS"), 30, "the second attempt")
        beat = procs[3]
        wait_for(lambda: beat.log().count("spdist.reconcile") >= 5, 30, "five reconciler ticks")
        assert flower_tasks(fbase, "spdist.reconcile") == []
    finally:
        for p in procs:
            p.stop()
