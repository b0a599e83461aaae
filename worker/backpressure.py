"""Back-pressure: a userId may have at most SPDIST_MAX_WAITING_PER_USER requests waiting.

At one call per interval, a lane of N waiting requests takes N intervals to drain; a
caller that queues more than the cap is told how long until the lane is back under it
(`Retry-After`) instead of being accepted into hours of wait.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Connection

from worker.context import Context
from worker.errors import TooManyWaiting
from worker.ledger.statements import COUNT_WAITING
from worker.models import utcnow
from worker.outcomes import from_us


def count_waiting(conn: Connection, user_id: str) -> int:
    """How many of the user's requests wait (an index-only count on ix_requests_state_user)."""
    return int(conn.execute(COUNT_WAITING, {"uid": user_id}).scalar() or 0)


def check(ctx: Context, user_id: str, waiting: int) -> None:
    """TooManyWaiting when `waiting` is at the cap, with the wait until it is under it."""
    if waiting < ctx.settings.max_waiting_per_user:
        return
    raise refusal(ctx, user_id, waiting)


def refusal(ctx: Context, user_id: str, waiting: int) -> TooManyWaiting:
    """The error for a user with `waiting` requests at or past the cap."""
    cap = ctx.settings.max_waiting_per_user
    retry_after = retry_after_s(ctx, user_id, waiting - cap + 1)
    return TooManyWaiting(
        f"userId {user_id} has {waiting} requests waiting, the limit "
        f"(SPDIST_MAX_WAITING_PER_USER={cap}); try again in {retry_after} s",
        retry_after_s=retry_after,
    )


def retry_after_s(ctx: Context, user_id: str, over: int) -> int:
    """Seconds until `over` more calls have been made: the next slot, then one gap each."""
    to_slot = 0.0
    try:
        next_free = _next_free_us(ctx, user_id)
        if next_free:
            to_slot = max(0.0, (from_us(next_free) - utcnow()).total_seconds())
    except Exception:  # noqa: BLE001 - an estimate: Redis down means no known slot
        to_slot = 0.0
    gap = ctx.settings.min_interval_s + ctx.settings.guard_s
    return max(1, math.ceil(to_slot + (over - 1) * gap))


def _next_free_us(ctx: Context, user_id: str) -> int:
    state: dict[str, Any] = ctx.pacer.state(user_id)
    return int(state.get("next_free") or 0)
