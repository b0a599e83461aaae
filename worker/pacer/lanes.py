"""Lanes in Redis: the Pacer class, its replies, and the Lua scripts it runs (scripts/)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, TypeVar, get_args

import redis

from worker.errors import PacerUnavailable
from worker.pacer import keys

US = 1_000_000
T = TypeVar("T")

ReplyKind = Literal["floor", "behind", "busy", "wait", "granted", "fired", "early", "lost", "late"]
"""What reserve.lua and fire.lua answer (each script's header says when)."""
SettleAction = Literal["keep", "requeue", "drop"]
"""What settle.lua does with the member: leave it where it is, put it back, take it out."""
KINDS: frozenset[str] = frozenset(get_args(ReplyKind))
TIMED: frozenset[str] = frozenset({"wait", "busy", "granted", "early", "fired"})


def lane_member(seq: int, request_id: str, project_id: str, upload_id: str) -> str:
    """The lane entry of a request: sorts by seq among equal priorities, readable."""
    return f"{seq:017d}:{request_id}:{project_id}:{upload_id}"


def parse_member(member: str) -> tuple[int, str, str, str]:
    """(seq, request_id, project_id, upload_id) of a lane entry."""
    seq, request_id, project_id, upload_id = member.split(":")
    return int(seq), request_id, project_id, upload_id


@dataclass(frozen=True)
class Reply:
    """A script's answer: what happened, the Redis clock, and its number (a time for wait,
    busy, granted and early; the entries left for fired) or, for behind, the lane's head."""

    kind: ReplyKind
    now_us: int
    value: int = 0
    head: str = ""


@dataclass(frozen=True)
class Wake:
    """A dispatch message to send: for `member`, due at `due_us` (Redis clock)."""

    member: str
    due_us: int
    now_us: int

    @property
    def delay_s(self) -> float:
        """Seconds from now until the message is due."""
        return max(0.0, (self.due_us - self.now_us) / US)


@dataclass(frozen=True)
class Placed:
    """After an enqueue: the message to send (if any), the new entry's 0-based rank, and
    the lane's next free slot (0 when unknown), on the Redis clock at `now_us`."""

    wake: Wake | None
    rank: int
    next_free_us: int
    now_us: int


def placed_from(raw: Any) -> Placed:
    """wake.lua's answer."""
    head, due, now = _text(raw[0]), int(raw[1]), int(raw[2])
    return Placed(Wake(head, due, now) if head else None, int(raw[3]), int(raw[4]), now)


def load_script(name: str) -> str:
    """The source of scripts/`name`, for a client of any kind to register."""
    return resources.files("worker.pacer").joinpath("scripts", name).read_text()


class Pacer:
    """Lua-backed lanes; times in microseconds of the Redis server's clock."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        interval_s: float,
        guard_s: float = 0.0,
        lead_s: float = 0.1,
        max_late_s: float = 1.0,
        send_window_s: float = 0.5,
        max_countdown_s: float = 300.0,
        wake_grace_s: float = 5.0,
    ) -> None:
        self.redis = client
        self.interval_us = int(interval_s * US)
        self.gap_us = int((interval_s + guard_s) * US)
        self.lead_us = int(lead_s * US)
        self.max_late_us = int(max_late_s * US)
        self.send_window_us = int(send_window_s * US)
        self.max_countdown_us = int(max_countdown_s * US)
        self.wake_grace_ms = int(wake_grace_s * 1000)
        # Idle lanes forget their state; SQL gives the floor back when they wake.
        self.state_ttl_ms = int(max(3600.0, 10 * interval_s) * 1000)
        self._reserve = client.register_script(load_script("reserve.lua"))
        self._fire = client.register_script(load_script("fire.lua"))
        self._settle = client.register_script(load_script("settle.lua"))
        self._wake = client.register_script(load_script("wake.lua"))
        self._idle = client.register_script(load_script("idle.lua"))

    def worst_free_us(self, slot_us: int) -> int:
        """The latest a call granted `slot_us` may leave (fired up to max_late after its slot,
        sent up to the send window after that), plus the gap: the pacing fence's value
        while that call is in flight."""
        return slot_us + self.max_late_us + self.send_window_us + self.gap_us

    def load_scripts(self) -> None:
        """Load every script into Redis now, so no first call pays for it."""
        sources = [
            s.script for s in (self._reserve, self._fire, self._settle, self._wake, self._idle)
        ]
        self._call(lambda: [self.redis.script_load(src) for src in sources])

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.RedisError as exc:
            raise PacerUnavailable(f"Redis error in the pacer: {exc}") from exc

    def _run(self, script: Any, user_id: str, *args: object) -> Any:
        return self._call(lambda: script(keys=keys.lane_keys(user_id), args=list(args)))

    def reserve(
        self,
        user_id: str,
        member: str,
        score: int,
        token: str,
        floor_us: int | None = None,
        *,
        floor_if_missing: bool = False,
    ) -> Reply:
        """Ask for the next slot for `member`; see reserve.lua for the answers.

        `floor_us` sets next_free when the lane has no state, and otherwise raises it; with
        `floor_if_missing` it only stands in for a missing state (no "floor" answer then)."""
        floor = "" if floor_us is None else str(int(floor_us))
        raw = self._run(
            self._reserve,
            user_id,
            member,
            score,
            token,
            self.lead_us,
            self.max_late_us,
            floor,
            self.state_ttl_ms,
            "1" if floor_if_missing else "0",
        )
        return _reply(raw)

    def fire(self, user_id: str, member: str, token: str) -> Reply:
        """Take the reserved slot now; `fired` means the call may be sent (its value: the
        entries left in the lane)."""
        raw = self._run(self._fire, user_id, member, token, self.gap_us, self.state_ttl_ms)
        return _reply(raw)

    def settle(
        self,
        user_id: str,
        member: str,
        *,
        token: str = "",
        action: SettleAction = "keep",
        score: int = 0,
        not_before_us: int | None = None,
    ) -> int:
        """Release a reservation, requeue/drop `member`, push next_free; returns next_free."""
        nb = "" if not_before_us is None else str(int(not_before_us))
        return int(
            self._run(self._settle, user_id, member, token, action, score, nb, self.state_ttl_ms)
        )

    def wake(
        self, user_id: str, *, force: bool = False, not_before_us: int | None = None
    ) -> Wake | None:
        """The head that needs a dispatch message now, marking it as sent; None if none.
        `not_before_us` first pushes the lane's next slot to at least that."""
        return self._wake_run(user_id, force=force, not_before_us=not_before_us).wake

    def enqueue(self, user_id: str, member: str, score: int, replaces: str | None = None) -> Placed:
        """Put a new request in its lane (instead of `replaces`) and wake the lane: one trip."""
        return self._wake_run(user_id, add=(member, score), replaces=replaces)

    def _wake_run(
        self,
        user_id: str,
        *,
        force: bool = False,
        add: tuple[str, int] | None = None,
        replaces: str | None = None,
        not_before_us: int | None = None,
    ) -> Placed:
        args = self.wake_args(force=force, add=add, replaces=replaces, not_before_us=not_before_us)
        return placed_from(self._run(self._wake, user_id, *args))

    def wake_args(
        self,
        *,
        force: bool = False,
        add: tuple[str, int] | None = None,
        replaces: str | None = None,
        not_before_us: int | None = None,
    ) -> list[str | int]:
        """ARGV of wake.lua (its KEYS are `keys.lane_keys(user_id)`)."""
        member, score = add or ("", 0)
        nb = "" if not_before_us is None else int(not_before_us)
        return [
            self.lead_us,
            self.max_countdown_us,
            self.grace_ms(),
            "1" if force else "0",
            member,
            score,
            replaces or "",
            nb,
            self.state_ttl_ms,
        ]

    def grace_ms(self) -> int:
        """How long past its due time a wake marker lasts: the grace, plus up to half again
        at random. Lanes woken together (a burst of new lanes, a reconciler pass after a
        flush) whose messages no worker takes then come due again spread out, not as one
        burst of duplicate messages from whichever process enqueues next."""
        return self.wake_grace_ms + random.randrange(self.wake_grace_ms // 2 + 1)

    def idle_lanes(self, user_ids: Sequence[str]) -> list[tuple[str, bool]]:
        """Of these lanes, those without a wake marker, as (user_id, queue is empty);
        one script call, however many lanes."""
        if not user_ids:
            return []
        lane_keys = [k for u in user_ids for k in (keys.lane_wake(u), keys.lane_queue(u))]
        raw = self._call(lambda: self._idle(keys=lane_keys, args=list(user_ids)))
        return [(_text(raw[i]), bool(raw[i + 1])) for i in range(0, len(raw), 2)]

    def add(self, user_id: str, entries: Iterable[tuple[str, int]]) -> None:
        """Put requests in their lane (no-op for those already there)."""
        mapping = {member: score for member, score in entries}
        if mapping:
            self._call(lambda: self.redis.zadd(keys.lane_queue(user_id), mapping, nx=True))

    def remove(self, user_id: str, member: str) -> None:
        """Take a request out of its lane (cancelled, superseded, no longer waiting)."""
        self.settle(user_id, member, action="drop")

    def members(self, user_id: str) -> list[str]:
        """The lane's waiting entries, head first."""
        raw: Any = self._call(lambda: self.redis.zrange(keys.lane_queue(user_id), 0, -1))
        return [_text(m) for m in raw]

    def state(self, user_id: str) -> dict[str, str]:
        """The lane's pacing state hash (empty when forgotten)."""
        raw = self._call(lambda: self.redis.hgetall(keys.lane_state(user_id)))
        return {_text(k): _text(v) for k, v in raw.items()}

    def now_us(self) -> int:
        """The Redis server's clock."""
        sec, usec = self._call(self.redis.time)
        return int(sec) * US + int(usec)


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _reply(raw: list[Any]) -> Reply:
    """A script's answer, checked: an answer of an unknown kind is an error, never a slot."""
    kind = _text(raw[0])
    if kind not in KINDS:
        raise PacerUnavailable(f"unknown pacer answer {kind!r}")
    extra = _text(raw[2]) if len(raw) > 2 else ""
    if kind in TIMED:
        return Reply(kind, int(raw[1]), int(extra))  # type: ignore[arg-type]  # in KINDS
    return Reply(kind, int(raw[1]), head=extra)  # type: ignore[arg-type]
