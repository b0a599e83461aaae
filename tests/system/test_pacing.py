"""The gap holds at Streampixel's door: through a slow TLS front, with Redis back older than
the truth, and with a process stopped between taking its slot and sending."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import USERS, backlog_plan, check
from worker.dev.procs import wait_for

pytestmark = pytest.mark.system


def test_tls_front_with_slow_varying_connection_setup(system_factory: Any) -> None:
    """Connection set-up varies from 0 to four times the guard (0.15 s) and idle connections
    are closed: a call whose connection were opened after its slot would land late, and
    the next one, on a quicker connection, inside the interval."""
    s = system_factory(tls_front={"setup_s": (0.0, 0.6), "idle_close_s": 1.0})
    s.backlog(4)
    books = s.settle(90)
    check(s, "TLS front, set-up 0-0.6 s, idle closed", books)
    assert books.states == {"succeeded": books.requests}
    assert s.front is not None and s.front.connections >= books.calls


def test_redis_restored_to_an_older_copy_mid_run(system_factory: Any) -> None:
    """Every key restored to a copy taken one round of calls earlier (expiries absolute, as
    a lagging replica or an RDB restart brings it back): each lane's next_free goes back by
    an interval, and only the SQL fence stands between that and a call inside it."""
    s = system_factory(interval_s=10.0)
    s.backlog(3)
    wait_for(lambda: len(s.calls()) >= len(USERS), 60, "each user's first call")
    older = s.redis.snapshot()
    wait_for(lambda: len(s.calls()) >= 2 * len(USERS), 60, "each user's second call")
    s.redis.restore(older)
    restored_at = time.time()
    books = s.settle(120)
    check(s, "Redis restored to an older copy (every key)", books)
    assert books.states == {"succeeded": books.requests}
    assert any(c["wall"] > restored_at for c in s.calls())  # the restore fell mid-run


def test_pool_child_stopped_between_slot_and_send(system_factory: Any, tmp_path: Path) -> None:
    """SIGSTOP after the fire, for four times the guard, then SIGCONT: the call leaves late,
    and the lane's next call must still land a full interval after it."""
    user, upload = backlog_plan(2)[len(USERS)]  # the first user's second request
    gate = tmp_path / "send-gate"
    gate.mkdir()
    (gate / "upload").write_text(upload)
    s = system_factory(
        SPDIST_TEST_SEND_GATE=str(gate), SPDIST_PACER_SEND_WINDOW_S="2", SPDIST_PACER_LEAD_S="0.1"
    )
    s.backlog(4)
    pid = int(str(wait_for(lambda: _read(gate / "at-send"), 60, "the gated call's fire")))
    os.kill(pid, signal.SIGSTOP)
    (gate / "go").touch()
    time.sleep(0.6)  # the injected stop: 4 x the 0.15 s guard
    os.kill(pid, signal.SIGCONT)
    books = s.settle(90)
    check(s, "pool child SIGSTOP between slot and send", books)
    calls = sorted((c for c in s.calls() if c["userId"] == user), key=lambda c: c["mono"])
    gated = next(i for i, c in enumerate(calls) if c["uploadId"] == upload)
    assert calls[gated]["gapS"] >= s.interval_s + 0.5  # it did leave late: after the stop
    assert calls[gated + 1]["gapS"] >= s.interval_s  # and the next one waited for it


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
