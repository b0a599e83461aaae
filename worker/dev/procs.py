"""Real processes for integration and system tests: workers, beat, the fake Streampixel."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[2]  # the checkout: worker/dev/procs.py
PY = sys.executable


def spdist_env(
    db_url: str, redis_url: str, sp_url: str, keys: dict[str, str], **extra: str
) -> dict[str, str]:
    """The environment of a spdist process pointed at test services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPDIST_")}
    env.update(
        SPDIST_DATABASE_URL=db_url,
        SPDIST_REDIS_URL=redis_url,
        SPDIST_STREAMPIXEL_URL=sp_url,
        SPDIST_API_KEYS=json.dumps(keys),
        SPDIST_MIN_INTERVAL_S="1",
        SPDIST_HTTP_TIMEOUT_S="3",
        SPDIST_HTTP_CONNECT_TIMEOUT_S="1",
        SPDIST_RECONCILE_EVERY_S="0.5",
        SPDIST_BACKOFF_BASE_S="0.3",
        SPDIST_TRANSIENT_BACKOFF_BASE_S="0.3",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Proc:
    """A child process whose output goes to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The main process id."""
        return self.popen.pid

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def send(self, sig: int) -> None:
        """Send a signal to the main process only."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process and all its children."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL what is left; close the log."""
        if self.popen.poll() is None:
            self.kill_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self.kill_group(signal.SIGKILL)
        self.popen.wait(5)
        self._log.close()


def wait_for(cond: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> object:
    """Poll `cond` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def start_fake(log_dir: Path, interval_s: float = 1.0, **extra: str) -> tuple[Proc, str]:
    """The fake Streampixel as its own process; returns it and its base URL."""
    argv = [PY, "-m", "worker.dev.fake_streampixel", "--port", "0", "--interval", str(interval_s)]
    for k, v in extra.items():
        argv += [f"--{k.replace('_', '-')}", v]
    proc = Proc("fake", argv, dict(os.environ, PYTHONUNBUFFERED="1"), log_dir)
    line = wait_for(
        lambda: re.search(r"listening on (\S+)", proc.log()), 15, "the fake Streampixel"
    )
    assert isinstance(line, re.Match)
    return proc, line.group(1)


# Celery's chatter between nodes, which a test or benchmark node has no use for.
QUIET = ("--without-heartbeat", "--without-mingle", "--without-gossip")


def worker_argv(name: str, concurrency: int = 2) -> list[str]:
    """`spdist worker` as a node named `name`, quiet."""
    return [
        PY,
        "-m",
        "worker.cli",
        "worker",
        "--concurrency",
        str(concurrency),
        "--",
        "-n",
        f"{name}@%h",
        *QUIET,
    ]


def start_worker(name: str, env: dict[str, str], log_dir: Path, concurrency: int = 2) -> Proc:
    """`spdist worker` with a distinct node name."""
    proc = Proc(name, worker_argv(name, concurrency), env, log_dir)
    wait_for(lambda: "ready." in proc.log() or proc.popen.poll() is not None, 30, f"{name} ready")
    assert proc.popen.poll() is None, proc.log()
    return proc


def start_beat(env: dict[str, str], log_dir: Path, name: str = "beat") -> Proc:
    """`spdist beat`."""
    return Proc(name, [PY, "-m", "worker.cli", "beat"], env, log_dir)


@contextmanager
def running(*procs: Proc) -> Iterator[None]:
    """Stop the given processes however the block ends."""
    try:
        yield
    finally:
        for p in procs:
            p.stop()


def fake_calls(sp_url: str) -> list[dict[str, object]]:
    """Calls the fake server recorded."""
    base = sp_url.split("/pixelStripeApi")[0]
    resp = httpx.get(f"{base}/_control/calls", timeout=5)
    resp.raise_for_status()
    return list(resp.json()["calls"])


def configure_fake(sp_url: str, **config: object) -> None:
    """Merge settings into the fake server (rules, force_429_next, …)."""
    base = sp_url.split("/pixelStripeApi")[0]
    httpx.post(f"{base}/_control/config", json=config, timeout=5).raise_for_status()
