"""The Lua pacer on fakeredis with Lua, under a controlled clock."""

from __future__ import annotations

import types
from collections.abc import Iterator

import fakeredis
import pytest
from fakeredis.commands_mixins import server_mixin

from worker.pacer import US, Pacer, keys, lane_member

USER = "a" * 24
INTERVAL = 120.0


class Clock:
    """The fake Redis server's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(server_mixin, "time", types.SimpleNamespace(time=c.time))
    return c


@pytest.fixture
def pacer(clock: Clock) -> Iterator[Pacer]:
    client = fakeredis.FakeRedis()
    yield Pacer(client, interval_s=INTERVAL, guard_s=0.5, lead_s=0.1, max_late_s=1.0)
    client.close()


def m(seq: int, rid: str = "") -> str:
    return lane_member(seq, rid or f"r{seq:031d}", "p" * 24, "u" * 24)


def grant_and_fire(pacer: Pacer, member: str, score: int = 0) -> int:
    reply = pacer.reserve(USER, member, score, "tok", floor_us=None)
    if reply.kind == "floor":
        reply = pacer.reserve(USER, member, score, "tok", floor_us=0)
    assert reply.kind == "granted", reply
    fired = pacer.fire(USER, member, "tok")
    assert fired.kind == "fired", fired
    return fired.now_us


def test_first_reserve_asks_sql_for_a_floor(pacer: Pacer) -> None:
    assert pacer.reserve(USER, m(1), 0, "t").kind == "floor"
    assert pacer.reserve(USER, m(1), 0, "t", floor_us=0).kind == "granted"


def test_calls_are_spaced_by_interval_plus_guard(pacer: Pacer, clock: Clock) -> None:
    pacer.add(USER, [(m(1), 0), (m(2), 0)])
    first = grant_and_fire(pacer, m(1))
    assert pacer.reserve(USER, m(2), 0, "t2").kind == "wait"
    clock.advance(INTERVAL + 0.5 - 0.1)  # within the lead: granted for the exact slot
    reply = pacer.reserve(USER, m(2), 0, "t2")
    assert reply.kind == "granted"
    assert reply.value == first + int((INTERVAL + 0.5) * US)
    assert pacer.fire(USER, m(2), "t2").kind == "early"
    clock.advance(0.1)
    assert pacer.fire(USER, m(2), "t2").kind == "fired"


def test_gap_counts_from_the_fire_not_the_grant(pacer: Pacer, clock: Clock) -> None:
    pacer.add(USER, [(m(1), 0), (m(2), 0)])
    assert pacer.reserve(USER, m(1), 0, "t", floor_us=0).kind == "granted"
    clock.advance(0.04)  # a slow database write between grant and send
    fired = pacer.fire(USER, m(1), "t").now_us
    clock.advance(INTERVAL + 0.5 - 0.1)
    assert pacer.reserve(USER, m(2), 0, "t2").value == fired + int((INTERVAL + 0.5) * US)


def test_fifo_and_only_the_head_gets_a_slot(pacer: Pacer) -> None:
    pacer.add(USER, [(m(1), 0), (m(2), 0)])
    pacer.reserve(USER, m(2), 0, "x", floor_us=0)  # seeds the state
    reply = pacer.reserve(USER, m(2), 0, "x")
    assert (reply.kind, reply.head) == ("behind", m(1))


def test_higher_priority_goes_first(pacer: Pacer) -> None:
    pacer.add(USER, [(m(1), 0), (m(2), -5)])  # score is -priority: m(2) has priority 5
    assert pacer.members(USER)[0] == m(2)
    assert pacer.reserve(USER, m(1), 0, "x", floor_us=0).kind == "behind"


def test_superseding_request_keeps_its_place(pacer: Pacer) -> None:
    pacer.add(USER, [(m(1), 0), (m(2), 0), (m(3), 0)])
    newer = lane_member(2, "n" * 32, "p" * 24, "v" * 24)
    pacer.enqueue(USER, newer, 0, replaces=m(2))
    assert pacer.members(USER) == [m(1), newer, m(3)]


def test_busy_while_another_try_holds_the_slot(pacer: Pacer) -> None:
    pacer.add(USER, [(m(1), 0)])
    assert pacer.reserve(USER, m(1), 0, "a", floor_us=0).kind == "granted"
    assert pacer.reserve(USER, m(1), 0, "b").kind == "busy"  # a duplicate message
    assert pacer.fire(USER, m(1), "b").kind == "lost"
    assert pacer.fire(USER, m(1), "a").kind == "fired"


def test_late_fire_is_refused(pacer: Pacer, clock: Clock) -> None:
    pacer.add(USER, [(m(1), 0)])
    pacer.reserve(USER, m(1), 0, "a", floor_us=0)
    clock.advance(1.5)
    assert pacer.fire(USER, m(1), "a").kind == "late"
    assert pacer.reserve(USER, m(1), 0, "b").kind == "granted"


def test_429_pushes_the_lane_and_keeps_the_head(pacer: Pacer, clock: Clock) -> None:
    pacer.add(USER, [(m(1), 0), (m(2), 0)])
    fired = grant_and_fire(pacer, m(1))
    push = fired + int(300 * US)
    assert pacer.settle(USER, m(1), action="requeue", not_before_us=push) == push
    assert pacer.members(USER)[0] == m(1)
    clock.advance(INTERVAL + 1)
    reply = pacer.reserve(USER, m(1), 0, "t")
    assert (reply.kind, reply.value) == ("wait", push)


def test_floor_after_state_loss(pacer: Pacer, clock: Clock) -> None:
    pacer.add(USER, [(m(1), 0), (m(2), 0)])
    fired = grant_and_fire(pacer, m(1))
    pacer.redis.flushall()  # Redis restarted empty
    pacer.add(USER, [(m(2), 0)])
    clock.advance(1)
    assert pacer.reserve(USER, m(2), 0, "t").kind == "floor"
    floor = fired + int((INTERVAL + 0.5) * US)  # what SQL recorded for the last attempt
    assert pacer.reserve(USER, m(2), 0, "t", floor_us=floor).kind == "wait"
    clock.advance(INTERVAL - 0.6)  # now + lead reaches the floor: granted for the floor
    assert pacer.reserve(USER, m(2), 0, "t").value == floor


def test_wake_names_the_head_once(pacer: Pacer, clock: Clock) -> None:
    pacer.add(USER, [(m(1), 0)])
    wake = pacer.wake(USER)
    assert wake is not None and wake.member == m(1) and wake.delay_s == 0
    assert pacer.wake(USER) is None  # already in flight
    assert pacer.wake(USER, force=True) is not None


def test_lanes_woken_together_come_due_again_spread_out(pacer: Pacer) -> None:
    """A wake marker lasts the grace plus up to half again: lanes woken at once whose
    messages nobody takes are not all woken again in the same instant."""
    users = [f"{i:024x}" for i in range(60)]
    for u in users:
        pacer.add(u, [(m(1), 0)])
        assert pacer.wake(u) is not None
    grace = pacer.wake_grace_ms
    ttls = [pacer.redis.pttl(keys.lane_wake(u)) for u in users]
    assert all(grace - 1000 <= t <= grace * 3 // 2 for t in ttls), ttls
    assert max(ttls) - min(ttls) > grace // 4  # spread: 60 draws from a 2.5 s range


def test_wake_waits_for_the_slot_and_skips_far_ones(pacer: Pacer, clock: Clock) -> None:
    pacer.add(USER, [(m(1), 0), (m(2), 0)])
    grant_and_fire(pacer, m(1))
    wake = pacer.wake(USER)
    assert wake is not None and wake.member == m(2)
    assert wake.delay_s == pytest.approx(INTERVAL + 0.5 - 0.1)
    pacer.settle(USER, m(2), not_before_us=pacer.now_us() + int(3600 * US))
    assert pacer.wake(USER, force=True) is None  # beyond max_countdown: the reconciler's job


def test_users_do_not_share_a_lane(pacer: Pacer) -> None:
    pacer.add(USER, [(m(1), 0)])
    grant_and_fire(pacer, m(1))
    other = "b" * 24
    pacer.add(other, [(m(2), 0)])
    assert pacer.reserve(other, m(2), 0, "t", floor_us=0).kind == "granted"


def test_idle_lanes_are_those_without_a_message_in_flight(pacer: Pacer) -> None:
    pacer.add(USER, [(m(1), 0)])
    pacer.add("b" * 24, [(m(2), 0)])
    assert pacer.wake("b" * 24) is not None  # a message is on its way for lane b
    lanes = [USER, "b" * 24, "c" * 24]
    assert pacer.idle_lanes(lanes) == [(USER, False), ("c" * 24, True)]
    assert pacer.idle_lanes([]) == []


def test_an_answer_of_unknown_kind_is_no_slot() -> None:
    """A script that answers something new (an older or newer script in Redis) fails closed."""
    from worker.errors import PacerUnavailable
    from worker.pacer.lanes import _reply

    with pytest.raises(PacerUnavailable, match="unknown pacer answer"):
        _reply([b"granted-ish", 1, 2])
    assert _reply([b"granted", 1, b"5"]).value == 5
