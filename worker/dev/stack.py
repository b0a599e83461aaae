"""`spdist api`, `flower`, `up` and `demo`: the processes of a whole stack, in the foreground.

`up` and `demo` run every process as a child (`sys.executable -m …`, so a virtualenv
just works), prefix each line of its output with its name, and stop them all on
Ctrl-C or SIGTERM, or as soon as one of them dies.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

PY = sys.executable
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def api(args: argparse.Namespace) -> int:
    """The HTTP API under uvicorn (WEB_CONCURRENCY processes, default one)."""
    import uvicorn

    workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
    uvicorn.run(
        "api.main:app",
        host=args.host,
        port=args.port,
        workers=workers,
        log_level="info",
        proxy_headers=True,
    )
    return 0


def flower(args: argparse.Namespace) -> int:
    """Flower for this app; basic auth from SPDIST_FLOWER_BASIC_AUTH (never on argv)."""
    from worker.celery_app import app
    from worker.settings import get_settings

    auth = get_settings().flower_basic_auth
    if auth is not None:
        os.environ["FLOWER_BASIC_AUTH"] = auth.get_secret_value()
    # Flower shows every task's arguments and can revoke them: loopback unless told.
    address = getattr(args, "address", None) or os.environ.get("SPDIST_FLOWER_ADDRESS")
    address = address or "127.0.0.1"
    if auth is None:
        warning = (
            "spdist flower: warning: no authentication (SPDIST_FLOWER_BASIC_AUTH is unset); "
            f"anyone who reaches {address}:{args.port} can see and revoke tasks"
        )
        print(warning, file=sys.stderr, flush=True)
    app.start(["flower", f"--port={args.port}", f"--address={address}", "--persistent=False"])
    return 0


class Stack:
    """Child processes whose output is prefixed with their names; stopped together."""

    def __init__(
        self,
        env: dict[str, str],
        out: IO[str] | None = None,
        hide: Callable[[str], bool] = lambda line: False,
    ) -> None:
        self.env = {**env, "PYTHONUNBUFFERED": "1"}
        self.out = out or sys.stdout
        self.hide = hide
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def say(self, name: str, line: str) -> None:
        """One line of output under a name."""
        with self.lock:
            self.out.write(f"{name:>7} | {line.rstrip()}\n")
            self.out.flush()

    def start(self, name: str, argv: Sequence[str], cwd: Path | None = None) -> None:
        """Start a child in its own session (the terminal's Ctrl-C comes to us only)."""
        proc = subprocess.Popen(
            list(argv),
            env=self.env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.children.append((name, proc))
        threading.Thread(target=self._pump, args=(name, proc), daemon=True).start()

    def _pump(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace")
            if not self.hide(line):
                self.say(name, line)

    def spdist(self, name: str, *args: str) -> None:
        """Start `spdist <args>` as a child."""
        self.start(name, [PY, "-m", "worker.cli", *args])

    def run(self) -> int:
        """Block until a stop signal (0) or a child's death (1); then stop everything."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda *_: self.stopping.set())
        code = 0
        while not self.stopping.wait(0.3):
            dead = next(((n, p) for n, p in self.children if p.poll() is not None), None)
            if dead is not None:
                self.say("spdist", f"{dead[0]} exited with code {dead[1].returncode}; stopping")
                code = 1
                break
        self.stop()
        return code

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every child (last started first), then SIGKILL whatever is left."""
        self.stopping.set()
        self.say("spdist", "stopping " + ", ".join(n for n, _ in reversed(self.children)))
        for _, proc in reversed(self.children):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, proc in reversed(self.children):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("spdist", f"{name} did not stop in time: killed")
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        self.say("spdist", "stopped")


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def redis_answers(url: str, master_name: str | None = None) -> bool:
    """Whether a Redis server answers PING at `url` (the master, for a Sentinel URL)."""
    import redis

    from worker.redis_url import sync_client

    client = sync_client(url, master_name, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def ensure_redis(stack: Stack, url: str, data_dir: Path, master_name: str | None = None) -> bool:
    """Redis answers at `url`, or a local redis-server is started for it (and says so).

    Never for a Sentinel URL: its master is someone else's to run; we only ask for it."""
    from worker.redis_url import is_sentinel

    if redis_answers(url, master_name):
        return True
    if is_sentinel(url):
        _sentinel_help(stack, master_name)
        return False
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 6379
    binary = shutil.which("redis-server")
    if host not in ("localhost", "127.0.0.1", "::1") or binary is None:
        _redis_help(stack, url)
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    stack.say(
        "spdist",
        f"no Redis answers at {url}: starting redis-server on port {port} "
        f"(append-only file in {data_dir})",
    )
    stack.start(
        "redis",
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "yes",
            "--dir",
            str(data_dir.resolve()),
            "--maxmemory-policy",
            "noeviction",
        ],
    )
    return _wait(lambda: redis_answers(url), 10)


def _sentinel_help(stack: Stack, master_name: str | None) -> None:
    stack.say(
        "spdist",
        f"no master {master_name!r} answers through the Sentinels of SPDIST_REDIS_URL; check "
        "their addresses and SPDIST_REDIS_MASTER_NAME (spdist starts no Redis for Sentinels)",
    )


def _redis_help(stack: Stack, url: str) -> None:
    for line in (
        f"no Redis answers at {url} (SPDIST_REDIS_URL), and spdist cannot start one here.",
        "Do one of these, then run the command again:",
        "  - install Redis: `sudo apt-get install redis-server` (Debian/Ubuntu) or "
        "`brew install redis` (macOS); spdist then starts it for you",
        "  - or run one: `docker run -d -p 6379:6379 redis:7 redis-server --appendonly yes`",
        "  - or point SPDIST_REDIS_URL at a Redis you have, e.g. redis://host:6379/0",
    ):
        stack.say("spdist", line)


def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def ports() -> tuple[int, int]:
    """API and Flower ports: 8000 and 5555 unless SPDIST_API_PORT / SPDIST_FLOWER_PORT."""
    return (
        int(os.environ.get("SPDIST_API_PORT", "8000")),
        int(os.environ.get("SPDIST_FLOWER_PORT", "5555")),
    )


def ports_free(stack: Stack, api_port: int, flower_port: int) -> bool:
    """Say which port is taken, before anything starts (and before any "up" banner)."""
    from worker.firstrun import taken_ports

    problems = taken_ports([(api_port, "SPDIST_API_PORT"), (flower_port, "SPDIST_FLOWER_PORT")])
    for line in problems:
        stack.say("spdist", line)
    return not problems


def start_services(stack: Stack, api_port: int, flower_port: int) -> None:
    """API, one worker, the scheduler and Flower."""
    stack.spdist("api", "api", "--host", "127.0.0.1", "--port", str(api_port))
    stack.spdist("worker", "worker", "--concurrency", "4", "--", "-n", "spdist@%h")
    stack.spdist("beat", "beat")
    stack.spdist("flower", "flower", "--port", str(flower_port))


def up(args: argparse.Namespace) -> int:
    """Migrate, then API, worker, beat and Flower until Ctrl-C."""
    from worker.migrate import upgrade
    from worker.settings import get_settings

    settings = get_settings()
    stack = Stack(dict(os.environ))
    if not ensure_redis(stack, settings.redis_url, Path("data/redis"), settings.redis_master_name):
        return 1
    upgrade(settings.database_url)
    stack.say("spdist", f"database {_safe(settings.database_url)} is at the latest migration")
    api_port, flower_port = ports()
    if not ports_free(stack, api_port, flower_port):
        return 1
    start_services(stack, api_port, flower_port)
    if not settings.api_keys and settings.api_keys_file is None:
        from worker.firstrun import NO_API_KEY

        stack.say("spdist", NO_API_KEY)
    stack.say(
        "spdist",
        f"API http://127.0.0.1:{api_port}/docs · console "
        f"http://127.0.0.1:{api_port}/ui/ · Flower "
        f"http://127.0.0.1:{flower_port} · Ctrl-C stops everything",
    )
    return stack.run()


def _safe(url: str) -> str:
    """A URL without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
