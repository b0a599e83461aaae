"""The dispatch against a Redis that is behind the record, and a send that leaves late."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.unit.test_dispatch import PROJECT2, UPLOAD2, USER, Harness, ok
from worker.models import DistributionAttempt, PacingFence
from worker.pacer import US, keys


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(responder: Callable[[httpx.Request], httpx.Response] = ok, **kw: object) -> Harness:
        made.append(Harness(tmp_path, responder, **kw))
        return made[-1]

    yield build
    for h in made:
        h.close()


def _fence(h: Harness) -> int:
    with h.ctx.sessions() as s:
        fence = s.scalar(select(PacingFence.not_before_us).where(PacingFence.user_id == USER))
        return int(fence or 0)


def _attempts(h: Harness) -> list[DistributionAttempt]:
    with h.ctx.sessions() as s:
        return list(s.scalars(select(DistributionAttempt).order_by(DistributionAttempt.id)))


def test_a_lane_older_than_the_record_is_corrected_not_obeyed(make: Callable[..., Harness]) -> None:
    """Redis comes back with the lane as it was before the last call (a lagging replica):
    the claim is refused by the fence, the lane moves to it, and the call waits for it."""
    h = make(min_interval_s=0.3)
    h.enqueue()
    assert h.run_messages(1) == ["triggered"]
    fence = _fence(h)
    first = _attempts(h)[0]
    assert fence == first.lane_free_us  # the recorded send plus the gap
    # Everything Redis learned from that call is gone; the lane says "free since long ago".
    h.redis.hset(keys.lane_state(USER), "next_free", 0)
    h.enqueue(PROJECT2, UPLOAD2)
    assert h.run_messages(1) == ["fenced"]
    assert len(h.calls) == 1 and len(_attempts(h)) == 1  # no call, no attempt row
    assert int(h.redis.hget(keys.lane_state(USER), "next_free") or 0) == fence
    words = h.run_messages()  # woken again for the fence: now it goes
    assert words[-1] == "triggered" and len(h.calls) == 2
    second = _attempts(h)[1]
    assert second.slot_us >= fence


def test_the_next_slot_counts_from_when_the_request_left(make: Callable[..., Harness]) -> None:
    """A send delayed after the fire (here 0.2 s, as a stopped or starved process would be)
    moves the lane's next slot and the recorded floor by as much."""
    delay_s = 0.2

    def late(request: httpx.Request) -> httpx.Response:
        time.sleep(delay_s)  # between the fire and the request's last byte
        request.extensions["trace"]("http11.send_request_body.complete", {})
        return ok(request)

    h = make(late, min_interval_s=0.3)
    h.enqueue()
    assert h.run_messages(1) == ["triggered"]
    attempt = _attempts(h)[0]
    gap_us = h.ctx.pacer.gap_us
    fired_us = int(h.redis.hget(keys.lane_state(USER), "last_fire") or 0)
    left_us = attempt.lane_free_us - gap_us
    assert left_us - fired_us >= delay_s * US
    assert int(h.redis.hget(keys.lane_state(USER), "next_free") or 0) == attempt.lane_free_us
    assert _fence(h) == attempt.lane_free_us


def test_a_call_past_its_send_window_is_not_made(make: Callable[..., Harness]) -> None:
    """The transport refuses to write past the deadline: no call, the claim and the fence
    are given back, and the request keeps its place for a later slot."""
    from worker.errors import NotSent

    tries: list[float] = []

    def refuse_once(request: httpx.Request) -> httpx.Response:
        tries.append(time.monotonic())
        if len(tries) == 1:
            raise NotSent("0.1 s past the send deadline")
        return ok(request)

    h = make(refuse_once, min_interval_s=0.1)
    h.enqueue()
    words = h.run_messages()
    assert words[0] == "slot-missed" and words[-1] == "triggered"
    assert [a.number for a in _attempts(h)] == [1]  # the refused one left no attempt row
