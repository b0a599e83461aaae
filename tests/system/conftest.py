"""The system under test as real processes, and the counts each scenario leaves behind."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import create_engine, delete, select
from sqlalchemy.orm import Session

from tests.books import Books, count
from tests.conftest import USER_KEYS
from worker.celery_app import transport_options
from worker.dev.network import TcpProxy, TlsFront
from worker.dev.procs import (
    PY,
    ROOT,
    Proc,
    configure_fake,
    fake_calls,
    spdist_env,
    start_fake,
    wait_for,
    worker_argv,
)
from worker.dev.servers import RedisServer, SentinelCluster
from worker.models import TERMINAL, DistributionAttempt, DistributionRequest
from worker.redis_url import broker_url

HOOKS = str(ROOT / "tests" / "testhooks")
USERS = list(USER_KEYS)[:3]
RESULTS: dict[str, dict[str, Any]] = {}


class System:
    """Own Redis, the fake Streampixel, workers and beat(s); enqueues from the test process."""

    def __init__(
        self,
        db_url: str,
        log_dir: Path,
        *,
        workers: int = 2,
        beats: int = 1,
        pg_proxy: bool = False,
        worker_env: list[dict[str, str]] | None = None,
        tls_front: dict[str, Any] | None = None,
        interval_s: float = 1.0,
        sentinel: bool = False,
        **extra: str,
    ) -> None:
        self.db_url, self.log_dir, self.interval_s = db_url, log_dir, interval_s
        self.procs: list[Proc] = []
        # sentinel=True: a master, a replica and three Sentinels; `redis` is then the
        # master the system starts on, and everything reaches it through the Sentinels.
        self.cluster = SentinelCluster(log_dir) if sentinel else None
        self.redis = self.cluster.master if self.cluster else RedisServer(log_dir)
        self.redis_url = self.cluster.url if self.cluster else self.redis.url
        self.master_name = self.cluster.master_name if self.cluster else None
        if self.master_name:
            extra = {"SPDIST_REDIS_MASTER_NAME": self.master_name, **extra}
        self.fake, self.sp_url = start_fake(log_dir, interval_s=interval_s)
        self.procs.append(self.fake)
        self.pg: TcpProxy | None = None
        proc_db = db_url
        if pg_proxy:
            self.pg = TcpProxy("127.0.0.1", 5432)
            proc_db = db_url.replace("127.0.0.1:5432", f"127.0.0.1:{self.pg.port}")
        keys = {u: USER_KEYS[u] for u in USERS}
        path = os.pathsep.join(p for p in (HOOKS, str(ROOT), os.environ.get("PYTHONPATH")) if p)
        defaults = {
            "SPDIST_PACER_GUARD_S": "0.15",
            "PYTHONPATH": path,
            "SPDIST_CONTEXT_SEAMS": "worker.dev.faults:seams_from_env",
            "SPDIST_MIN_INTERVAL_S": str(interval_s),
        }
        call_url = self.sp_url
        self.front: TlsFront | None = None
        if tls_front is not None:  # workers call through it; the test reads the fake directly
            fake_port = int(self.sp_url.split("/pixelStripeApi")[0].rsplit(":", 1)[1])
            self.front = TlsFront(fake_port, log_dir, **tls_front)
            call_url = self.front.url()
            defaults["SSL_CERT_FILE"] = str(self.front.ca_path)
        self.env = spdist_env(proc_db, self.redis_url, call_url, keys, **{**defaults, **extra})
        self.workers = [
            self.spawn_worker(f"w{i + 1}", (worker_env or [{}] * workers)[i], wait=False)
            for i in range(workers)
        ]
        for w in self.workers:
            wait_ready(w)
        self.beats = [self.spawn_beat(f"beat{i + 1}") for i in range(beats)]
        for b in self.beats:  # a scenario starts with its reconciler running, however slow
            wait_for(partial(_logged, b, "Sending due task"), 60, f"{b.name} running")
        self.restarts = 0
        self._stopping = threading.Event()
        threading.Thread(target=self._supervise, daemon=True).start()
        self.engine = create_engine(db_url)
        self.app = Celery("spdist-test", broker=broker_url(self.redis_url), set_as_current=False)
        self.app.conf.broker_transport_options = transport_options(self.redis_url, self.master_name)
        self.ctx = self._context(keys)

    # processes -------------------------------------------------------------------------
    def spawn_worker(
        self,
        name: str,
        env: dict[str, str] | None = None,
        *,
        wait: bool = True,
        concurrency: int = 2,
    ) -> Proc:
        proc = Proc(name, worker_argv(name, concurrency), {**self.env, **(env or {})}, self.log_dir)
        self.procs.append(proc)
        if wait:
            wait_ready(proc)
        return proc

    def spawn_beat(self, name: str) -> Proc:
        proc = Proc(name, [PY, "-m", "worker.cli", "beat"], self.env, self.log_dir)
        self.procs.append(proc)
        return proc

    def _supervise(self) -> None:
        """Restart a worker whose main process ended, as systemd or Kubernetes would.

        Celery's worker exits on some broker faults (a non-JSON entry in the queue; a
        broker connection lost while unacked messages are restored): see RELIABILITY.md."""
        while not self._stopping.wait(0.5):
            for i, w in enumerate(list(self.workers)):
                if w.popen.poll() is not None and not self._stopping.is_set():
                    self.restarts += 1
                    self.workers[i] = self.spawn_worker(f"{w.name}r", wait=False)

    def worker_of(self, child_pid: int) -> Proc:
        """The worker whose pool child has this pid."""
        ppid = parent_pid(child_pid)
        return next(p for p in self.workers if p.pid in (ppid, child_pid))

    def logs(self) -> str:
        return "".join(p.log() for p in self.procs)

    # the test process's own spdist context --------------------------------------------
    def _context(self, keys: dict[str, str]) -> Any:
        from worker.context import build_context
        from worker.settings import Settings

        settings = Settings(
            database_url=self.db_url,
            redis_url=self.redis_url,
            api_keys=keys,
            min_interval_s=self.interval_s,
            pacer_guard_s=0.15,
            redis_master_name=self.master_name,
        )
        return build_context(settings, send=self.send_dispatch)

    def send_dispatch(self, user_id: str, wake: Any) -> None:
        """send_dispatch, through this system's broker."""
        from kombu.exceptions import OperationalError
        from redis import RedisError

        from worker.errors import PacerUnavailable
        from worker.outcomes import from_us
        from worker.pacer import parse_member

        _, request_id, project_id, upload_id = parse_member(wake.member)
        kwargs = {
            "request_id": request_id,
            "user_id": user_id,
            "project_id": project_id,
            "upload_id": upload_id,
            "due_us": wake.due_us,
        }
        eta = from_us(wake.due_us) if wake.delay_s > 0.002 else None
        try:
            self.send("spdist.dispatch", kwargs, eta=eta)
        except (OperationalError, RedisError) as exc:
            raise PacerUnavailable(f"broker unreachable: {exc}") from exc

    def send(self, task: str, kwargs: dict[str, Any], **options: Any) -> None:
        policy = {"max_retries": 1, "interval_start": 0.1}
        self.app.send_task(task, kwargs=kwargs, queue="spdist", retry_policy=policy, **options)

    def enqueue(
        self, user: str, upload: str, project: str | None = None, ctx: Any = None, priority: int = 0
    ) -> str:
        from worker import distributions

        ctx = ctx or self.ctx
        project = project or f"{0xABC000 + USERS.index(user):024x}"
        new = distributions.validate(ctx, user, project, upload, priority, coalesce=False)
        return distributions.enqueue(ctx, new).id

    def backlog(self, per_user: int = 4, start: int = 0) -> list[tuple[str, str]]:
        """Enqueue `per_user` requests for each user, interleaved; (user, upload) pairs."""
        made = backlog_plan(per_user, start)
        for user, upload in made:
            self.enqueue(user, upload)
        return made

    # reading the books ------------------------------------------------------------------
    def requests(self) -> list[DistributionRequest]:
        with Session(self.engine) as s:
            return list(s.scalars(select(DistributionRequest)).all())

    def attempts(self) -> list[DistributionAttempt]:
        with Session(self.engine) as s:
            q = select(DistributionAttempt).order_by(DistributionAttempt.id)
            return list(s.scalars(q).all())

    def calls(self) -> list[dict[str, Any]]:
        return fake_calls(self.sp_url)

    def configure(self, **config: object) -> None:
        configure_fake(self.sp_url, **config)

    def all_terminal(self) -> bool:
        reqs = self.requests()
        return bool(reqs) and all(r.state in TERMINAL for r in reqs)

    def delete_request(self, request_id: str) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(delete(DistributionRequest).where(DistributionRequest.id == request_id))

    def settle(self, timeout: float = 60.0) -> Books:
        """Wait until every request ended (or time out), then count."""
        with contextlib.suppress(AssertionError):  # what never ended is counted as lost
            wait_for(self.all_terminal, timeout, "every request to end", every=0.25)
        books = count(self.requests(), self.attempts(), self.calls())
        books.worker_restarts = self.restarts
        return books

    def close(self) -> None:
        self._stopping.set()
        for p in reversed(self.procs):
            p.stop()
        if self.cluster is not None:
            self.cluster.close()
        self.redis.kill()
        if self.front is not None:
            self.front.close()
        if self.pg is not None:
            self.pg.cut()
        self.engine.dispose()
        self.ctx.close()


def backlog_plan(per_user: int = 4, start: int = 0) -> list[tuple[str, str]]:
    """The (user, upload) pairs `System.backlog` enqueues, in order: known in advance, so a
    fault can be scripted before the first of them is dispatched."""
    return [
        (user, f"{0xB00000 + u * 0x1000 + n:024x}")
        for n in range(start, start + per_user)
        for u, user in enumerate(USERS)
    ]


def wait_ready(proc: Proc) -> None:
    wait_for(
        lambda: "ready." in proc.log() or proc.popen.poll() is not None, 60, f"{proc.name} ready"
    )
    assert proc.popen.poll() is None, proc.log()


def parent_pid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise LookupError(pid)


def wait_call(system: System, upload: str, timeout: float = 30.0) -> dict[str, Any]:
    """The first call the fake saw for this upload, once it arrives."""
    found = wait_for(
        lambda: [c for c in system.calls() if c["uploadId"] == upload],
        timeout,
        f"a call for {upload}",
    )
    assert isinstance(found, list)
    return found[0]


def wait_attempt(system: System, upload: str, timeout: float = 30.0) -> DistributionAttempt:
    """The first attempt row of the request for this upload."""

    def find() -> DistributionAttempt | None:
        ids = {r.id for r in system.requests() if r.upload_id == upload}
        return next((a for a in system.attempts() if a.request_id in ids), None)

    found = wait_for(find, timeout, f"an attempt for {upload}")
    assert isinstance(found, DistributionAttempt)
    return found


def check(system: System, name: str, books: Books, *, max_unknown: int = 0) -> None:
    """Record the scenario's counts, then hold it to the promises."""
    RESULTS[name] = books.as_dict()
    detail = json.dumps(books.as_dict())
    assert books.lost == 0, f"lost requests: {detail}"
    assert books.duplicated == 0, f"calls with no attempt of their own: {detail}"
    assert books.inside_interval == 0, f"calls inside the interval: {detail}"
    assert books.unmatched == 0, f"attempts without a call: {detail}"
    assert books.open_attempts == 0, f"attempts never completed: {detail}"
    assert books.unknown <= max_unknown, f"unexpected unknown outcomes: {detail}"


@pytest.fixture
def system_factory(pg_url: str, tmp_path: Path) -> Iterator[Any]:
    made: list[System] = []

    def make(**kw: Any) -> System:
        s = System(pg_url, tmp_path, **kw)
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("reliability counts (lost / duplicated / inside-interval / unknown)")
    for name, b in RESULTS.items():
        counts = f"{b['lost']:3} {b['duplicated']:3} {b['inside_interval']:3} {b['unknown']:3}"
        tr.write_line(f"{name:42} {counts}   requests {b['requests']:3} calls {b['calls']:3}")
    out = os.environ.get("SPDIST_RELIABILITY_JSON")
    if out:
        Path(out).write_text(json.dumps(RESULTS, indent=2, sort_keys=True))


def _logged(p: Proc, text: str) -> bool:
    return text in p.log()
