"""Worker processes killed or stopped mid-call, skewed clocks, and two schedulers at once."""

from __future__ import annotations

import base64
import json
import signal
from collections import Counter
from typing import Any

import pytest

from tests.system.conftest import backlog_plan, check, wait_attempt, wait_call
from worker.dev.procs import wait_for

pytestmark = pytest.mark.system
HANG = [{"action": "hang", "seconds": 2}]  # inside the 3 s timeout: the call is "in flight"


def _in_flight(s: Any) -> tuple[str, int]:
    """Make the 5th request's call hang and wait for it; (upload, pid of the calling child)."""
    made = s.backlog(4)
    upload = made[4][1]
    s.configure(rules={upload: list(HANG)})
    wait_call(s, upload)
    attempt = wait_attempt(s, upload)
    return upload, int(str(attempt.worker).rsplit(":", 1)[1])


def held_lanes(s: Any) -> set[str]:
    """Users whose dispatch message a worker holds (in the broker's unacked set) while none
    of their attempts is open: only the reconciler's lane wake can move them on if it dies."""
    held = set()
    for raw in s.ctx.pacer.redis.hvals("unacked"):
        message = json.loads(raw)[0]
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        if message["headers"].get("task") == "spdist.dispatch":
            held.add(json.loads(body)[1]["user_id"])
    ids = {r.id: r.user_id for r in s.requests()}
    return held - {ids[a.request_id] for a in s.attempts() if a.outcome is None}


def test_kill9_worker_main_process_mid_call(system_factory: Any) -> None:
    # One worker: it holds every lane's next message (ETA) when it dies. Those stay in
    # Redis's unacked set until the visibility timeout (an hour), so the lanes go on only
    # because the reconciler wakes them from SQL. The kill waits until such a lane exists
    # (a lane with a call in flight is also carried on by its lease expiring).
    s = system_factory(workers=1, SPDIST_TEST_LEASE_S="8")
    _, child = _in_flight(s)
    wait_for(lambda: held_lanes(s), 10, "a lane whose only message the worker holds")
    victim = s.worker_of(child)
    victim.send(signal.SIGKILL)  # the supervisor starts a new one
    # Both of its pool children may be mid-dispatch (two users' slots can overlap the hang).
    # A child that dies with its parent leaves its open attempt to expire as `unknown`; one
    # that lives on records its answer. Nothing opened after the kill may end `unknown`.
    wait_for(lambda: victim.popen.poll() is not None, 10, "the main process gone")
    in_flight = sum(1 for a in s.attempts() if a.outcome is None)
    assert 1 <= in_flight <= 2
    check(s, "kill -9 worker main process mid-call", s.settle(60), max_unknown=in_flight)


def test_kill9_pool_child_mid_call(system_factory: Any) -> None:
    s = system_factory(SPDIST_TEST_LEASE_S="8")
    upload, child = _in_flight(s)
    signal_pid(child, signal.SIGKILL)
    books = s.settle(60)
    check(s, "kill -9 pool child mid-call", books, max_unknown=1)
    assert books.unknown == 1  # the call happened, its answer was never read
    assert books.states == {"succeeded": books.requests}


def test_sigterm_with_tasks_in_flight(system_factory: Any) -> None:
    s = system_factory()
    _, child = _in_flight(s)
    victim = s.worker_of(child)
    victim.send(signal.SIGTERM)
    wait_for(lambda: victim.popen.poll() is not None, 30, "warm shutdown")
    books = s.settle(60)
    check(s, "SIGTERM with tasks in flight", books)
    assert books.states == {"succeeded": books.requests}


def test_worker_clocks_five_minutes_ahead_and_behind(system_factory: Any) -> None:
    skews = [{"SPDIST_TEST_CLOCK_SKEW_S": "300"}, {"SPDIST_TEST_CLOCK_SKEW_S": "-300"}]
    s = system_factory(worker_env=skews)
    made = backlog_plan(4)
    # Transient failures put requests in `retrying`: next_attempt_at must not follow a skewed
    # clock. Slow answers keep claims open for a while: a lease written on a skewed clock
    # would be expired by the reconciler under a live call.
    flaky = [{"status": 500, "message": "Internal server error"}]
    slow = [{"action": "hang", "seconds": 0.8}]
    rules = {upload: list(slow) for _, upload in made[::2]}
    rules.update({made[3][1]: list(flaky), made[7][1]: list(flaky)})
    s.configure(rules=rules)
    s.backlog(4)
    books = s.settle(120)
    check(s, "worker clocks +5 min and -5 min", books)
    assert books.states == {"succeeded": books.requests}
    # Both workers took their share: ETAs are read on the Redis clock, so the one behind
    # does not hold its messages for five minutes.
    by_worker = Counter(
        s.worker_of(int(str(a.worker).rsplit(":", 1)[1])).name for a in s.attempts()
    )
    assert set(by_worker) == {"w1", "w2"}, by_worker


def test_two_schedulers_cause_no_double_call(system_factory: Any) -> None:
    s = system_factory(beats=2)
    made = backlog_plan(5)
    flaky = [{"status": 503, "message": "Service unavailable"}]
    s.configure(rules={made[2][1]: list(flaky), made[6][1]: list(flaky)})
    s.backlog(5)
    books = s.settle(60)
    check(s, "two beats at once", books)
    assert books.states == {"succeeded": books.requests}


def signal_pid(pid: int, sig: int) -> None:
    import os

    os.kill(pid, sig)
