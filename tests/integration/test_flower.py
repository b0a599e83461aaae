"""Real Flower against real Redis: it shows a dispatched task, named and argued, keyless."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_api import TOKEN, free_port, start_api
from tests.procs import PY, Proc, spdist_env, start_fake, start_worker, wait_for

pytestmark = pytest.mark.integration
FLOWER_AUTH = ("ops", "flower-pw")


def start_flower(env: dict[str, str], log_dir: Path) -> tuple[Proc, str]:
    """`spdist flower` on a free port, with basic auth; waits until it answers."""
    port = free_port()
    env = {**env, "SPDIST_FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH),
           "SPDIST_FLOWER_ADDRESS": "127.0.0.1"}  # fmt: skip
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
        r = httpx.post(f"{api}/v1/distributions", json=body,
                       headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert r.status_code == 202, r.text
        try:
            found = wait_for(lambda: mine(flower_tasks(flower, "spdist.dispatch"), user), 15,
                             "the task")  # fmt: skip
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
