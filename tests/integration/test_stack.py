"""`spdist up`: migrates, runs API, worker, beat and Flower prefixed, stops them on a signal."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import USER_KEYS
from tests.integration.test_api import free_port
from worker.dev.procs import PY, ROOT, spdist_env, wait_for

pytestmark = pytest.mark.integration


def start_up(
    env: dict[str, str], cwd: Path, command: str = "up"
) -> tuple[subprocess.Popen[bytes], Path]:
    log = cwd / f"{command}.log"
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [PY, "-m", "worker.cli", command],
            env={**env, "PYTHONPATH": str(ROOT)},
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, log


def ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run_and_stop(env: dict[str, str], cwd: Path, sig: int) -> str:
    api_port, flower_port = free_port(), free_port()
    env = {
        **env,
        "SPDIST_API_PORT": str(api_port),
        "SPDIST_FLOWER_PORT": str(flower_port),
        "SPDIST_FLOWER_ADDRESS": "127.0.0.1",
    }
    proc, log = start_up(env, cwd)
    try:
        base = f"http://127.0.0.1:{api_port}"
        wait_for(lambda: proc.poll() is not None or ready(base), 60, "the API of spdist up")
        assert proc.poll() is None, log.read_text()
        wait_for(lambda: "ready." in log.read_text(), 60, "the worker")
        flower = f"http://127.0.0.1:{flower_port}/api/tasks"
        wait_for(lambda: _answers(flower), 60, "Flower")
        proc.send_signal(sig)
        assert proc.wait(60) == 0, log.read_text()
        assert not ready(base) and not _answers(flower)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return log.read_text()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def test_up_runs_the_stack_and_ctrl_c_stops_it(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    env = spdist_env(pg_url, redis_url, "http://127.0.0.1:9/pixelStripeApi", USER_KEYS)
    out = run_and_stop(env, tmp_path, signal.SIGINT)
    for name in ("api", "worker", "beat", "flower", "spdist"):
        assert f"{name:>7} | " in out, name
    assert "at the latest migration" in out and out.rstrip().endswith("spdist | stopped")


def test_up_starts_redis_when_none_answers(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary")
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = spdist_env(f"sqlite:///{tmp_path / 'up.db'}", url, "http://127.0.0.1:9/x", USER_KEYS)
    out = run_and_stop(env, tmp_path, signal.SIGTERM)
    assert "starting redis-server" in out
    assert (tmp_path / "data" / "redis").is_dir()
    assert "  redis | " in out


def test_up_says_what_to_do_without_redis(tmp_path: Path) -> None:
    # A closed port on a loopback address (nothing outside this machine is contacted) that
    # is not 127.0.0.1, for which `up` would start a redis-server of its own.
    url = f"redis://127.0.0.2:{free_port()}/0"
    env = spdist_env(f"sqlite:///{tmp_path / 'up.db'}", url, "http://127.0.0.1:9/x", USER_KEYS)
    proc, log = start_up(env, tmp_path)
    assert proc.wait(30) == 1
    out = log.read_text()
    assert f"no Redis answers at {url}" in out and "apt-get install" in out
