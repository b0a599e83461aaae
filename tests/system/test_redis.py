"""Redis emptied or gone mid-run, and requests accepted while Redis was unreachable."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.system.conftest import USERS, check
from worker.dev.procs import wait_for
from worker.dev.servers import free_port
from worker.models import State

pytestmark = pytest.mark.system


def _calls_reach(s: Any, n: int) -> None:
    wait_for(lambda: len(s.calls()) >= n, 60, f"{n} calls")


def test_redis_flushall_mid_run(system_factory: Any) -> None:
    s = system_factory()
    s.backlog(5)
    for n in (3, 7):
        _calls_reach(s, n)  # flush right after a call: the next one must still wait the interval
        s.redis.flushall()
    books = s.settle(60)
    check(s, "Redis FLUSHALL mid-run", books)
    assert books.states == {"succeeded": books.requests}


def test_redis_down_10s_and_back_empty(system_factory: Any) -> None:
    s = system_factory()
    s.backlog(5)
    _calls_reach(s, 3)
    # Every request already marked published: what Redis loses now only SQL can give back
    # (the outbox would otherwise re-send the requests it had not marked yet).
    wait_for(
        lambda: all(r.published_at or r.state != State.QUEUED for r in s.requests()),
        30,
        "the outbox drained",
    )
    s.redis.kill()
    down_at = time.time()
    time.sleep(10)  # the injected outage
    s.redis.start()
    up_at = time.time()
    books = s.settle(90)
    check(s, "Redis stopped 10 s, restarted empty", books, max_unknown=2)
    assert books.states == {"succeeded": books.requests}
    # Fail closed: with no pacer there is no slot. A call fired just before the kill may
    # land just after it; none may start while Redis is down.
    assert [c for c in s.calls() if down_at + 0.5 < c["wall"] < up_at] == []


def test_outbox_publishes_what_was_accepted_without_redis(system_factory: Any) -> None:
    s = system_factory()
    s.backlog(5)
    _calls_reach(s, 1)
    # Urgent requests stored by a process cut off from Redis, while every lane is still busy:
    # the outbox must put them in their lanes (ahead, by priority), not leave them until
    # the lanes run dry and the reconciler refills them from SQL.
    cut_off = _context_without_redis(s)
    late = {
        s.enqueue(user, f"{0xC00000 + i:024x}", ctx=cut_off, priority=100): user
        for i, user in enumerate(USERS)
    }
    unpublished = {r.id for r in s.requests() if r.published_at is None}
    assert set(late) <= unpublished  # stored in SQL, not in Redis: the outbox holds them
    books = s.settle(60)
    check(s, "request accepted while Redis unreachable", books)
    assert books.states == {"succeeded": books.requests}
    uploads = {r.id: r.upload_id for r in s.requests()}
    for request_id, user in late.items():
        order = [
            c["uploadId"] for c in sorted(s.calls(), key=lambda c: c["wall"]) if c["userId"] == user
        ]
        assert order.index(uploads[request_id]) < len(order) - 2, (user, order)


def _context_without_redis(s: Any) -> Any:
    """The test's context, but its Redis is a closed port (an API cut off from Redis)."""
    from dataclasses import replace

    from worker.context import make_pacer, make_redis

    dead = make_redis(f"redis://127.0.0.1:{free_port()}/0")
    return replace(s.ctx, pacer=make_pacer(s.ctx.settings, dead))
