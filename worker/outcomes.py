"""What each answer means for the request and its lane: the retry policy in one place."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from worker.errors import (
    PermanentError,
    RateLimited,
    RetryableError,
    StillProcessing,
    StreampixelError,
)
from worker.ledger import Snapshot
from worker.models import State, utcnow
from worker.pacer import US
from worker.settings import Settings
from worker.streampixel import Triggered


@dataclass(frozen=True)
class Plan:
    """The attempt's record and the request's next state after one answer."""

    outcome: str
    http_status: int | None
    message: str
    lane_free_us: int
    requeue_at_head: bool = False
    request_values: dict[str, Any] = field(default_factory=dict)


def plan(
    settings: Settings,
    req: Snapshot,
    result: Triggered | StreampixelError,
    fired_us: int,
) -> Plan:
    """Decide what happens after `result`, a call that left at `fired_us` (Redis clock: the
    fire, plus whatever delayed the send)."""
    gap_us = int((settings.min_interval_s + settings.guard_s) * US)
    now = from_us(fired_us)  # the Redis clock: this machine's may be off
    base: dict[str, Any] = {
        "outcome": str(result.outcome),
        "http_status": result.http_status,
        "message": result.message,
        "lane_free_us": fired_us + gap_us,
    }
    if isinstance(result, Triggered):
        return Plan(**base, request_values=_to(State.SUCCEEDED, result.message))
    if isinstance(result, RateLimited):
        return _rate_limited(settings, result, fired_us, base)
    if isinstance(result, StillProcessing):
        return Plan(**base, request_values=_processing(settings, req, result.message, now))
    if isinstance(result, RetryableError):
        return Plan(**base, request_values=transient(settings, req.failures, result.message, now))
    assert isinstance(result, PermanentError)
    return Plan(**base, request_values=_to(State.FAILED, result.message))


def _to(state: State, message: str, **extra: Any) -> dict[str, Any]:
    return {"state": state, "last_message": message, "next_attempt_at": None, **extra}


def _rate_limited(
    settings: Settings, result: RateLimited, fired_us: int, base: dict[str, Any]
) -> Plan:
    """A 429 uses no attempt: the lane moves on by the interval or the stated wait."""
    wait_s = max(settings.min_interval_s, result.retry_after_s or 0.0) + settings.guard_s
    free_us = fired_us + int(wait_s * US)
    base["lane_free_us"] = free_us
    values = _to(State.RETRYING, result.message, next_attempt_at=from_us(free_us))
    return Plan(**base, requeue_at_head=True, request_values=values)


def _processing(settings: Settings, req: Snapshot, message: str, now: datetime) -> dict[str, Any]:
    """ "No URL yet": 30 s doubling to 10 min, for up to two hours from the first such answer."""
    since = req.processing_since or now
    if (now - since).total_seconds() >= settings.processing_window_s:
        hours = settings.processing_window_s / 3600
        return _to(State.FAILED, f"{message} (still no URL after {hours:g} h)")
    # 30 s, 60 s, 120 s…: each wait is the base plus all the waiting so far, which doubles
    # it without counting earlier answers (10 min at most).
    waited = (now - since).total_seconds()
    delay = min(settings.backoff_cap_s, settings.backoff_base_s + waited)
    return _to(
        State.RETRYING,
        message,
        next_attempt_at=now + timedelta(seconds=delay),
        processing_since=since,
    )


def transient(
    settings: Settings, failures: int, message: str, now: datetime | None = None
) -> dict[str, Any]:
    """5xx, timeouts, network errors, unknown outcomes: backoff with jitter, then `dead`.

    `now` should come from the Redis clock that every process shares."""
    failures += 1
    if failures >= settings.max_attempts:
        return _to(State.DEAD, f"{message} (gave up after {failures} attempts)", failures=failures)
    delay = min(
        settings.transient_backoff_cap_s, settings.transient_backoff_base_s * 2 ** (failures - 1)
    )
    delay = delay / 2 + random.uniform(0, delay / 2)
    return _to(
        State.RETRYING,
        message,
        next_attempt_at=(now or utcnow()) + timedelta(seconds=delay),
        failures=failures,
    )


def from_us(us: int) -> datetime:
    """A Redis-clock microsecond timestamp as an aware UTC datetime."""
    from datetime import UTC

    return datetime.fromtimestamp(us / US, UTC)
