"""Postgres unreachable mid-run: no call may be made that cannot be recorded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import backlog_plan, check
from worker.dev.procs import wait_for

pytestmark = pytest.mark.system


def test_postgres_unreachable_10s(system_factory: Any, tmp_path: Path) -> None:
    # The outage starts at the worst moment: a worker holds the 4th request's slot and is
    # about to write its claim (the test hook stops it there). Lease 24 s: an answer read
    # during the outage is recorded within lease/2 once it ends.
    gate = tmp_path / "gate"
    gate.mkdir()
    target = backlog_plan(5)[3][1]
    (gate / "upload").write_text(target)
    s = system_factory(pg_proxy=True, SPDIST_TEST_LEASE_S="24", SPDIST_TEST_CLAIM_GATE=str(gate))
    s.backlog(5)
    wait_for((gate / "at-claim").exists, 60, "a worker about to claim the 4th request")
    s.pg.cut()
    cut_at = time.time()
    (gate / "go").touch()
    time.sleep(10)  # the injected outage
    s.pg.restore()
    books = s.settle(90)
    target_calls = [c for c in s.calls() if c["uploadId"] == target]
    during = [c for c in s.calls() if cut_at + 2 < c["wall"] < cut_at + 10]
    # A claim whose COMMIT was cut may have committed with no call after it: that attempt's
    # lease expires and reads `unknown` (with no call at the fake: never a call unrecorded).
    check(s, "Postgres unreachable 10 s", books, max_unknown=2)
    assert books.states == {"succeeded": books.requests}
    # The claim could not be written, so that slot went unused: its call came after the outage.
    assert target_calls and min(c["wall"] for c in target_calls) > cut_at + 10
    # A call claimed before the cut may land just after it; none may start later.
    assert during == []
