"""Every Redis key spdist uses, in one place."""

from __future__ import annotations

PREFIX = "spdist"


def lane_queue(user_id: str) -> str:
    """Sorted set of waiting requests: score -priority, member `seq:id:project:upload`."""
    return f"{PREFIX}:lane:{{{user_id}}}:q"


def lane_state(user_id: str) -> str:
    """Hash of the user's pacing state: next_free, last_fire, holder, hold_slot, hold_until."""
    return f"{PREFIX}:lane:{{{user_id}}}:s"


def lane_wake(user_id: str) -> str:
    """The member whose dispatch message is in flight for this lane (expires on its own)."""
    return f"{PREFIX}:lane:{{{user_id}}}:wake"


def lane_keys(user_id: str) -> list[str]:
    """KEYS of every lane script, in the order the scripts expect."""
    return [lane_queue(user_id), lane_state(user_id), lane_wake(user_id)]


def reconcile_turn() -> str:
    """Held for most of a reconcile period by the pass that runs: later messages skip."""
    return f"{PREFIX}:reconcile:turn"


def reconcile_last() -> str:
    """When the last reconcile pass ran (Redis clock, microseconds): the scheduler's heartbeat."""
    return f"{PREFIX}:reconcile:last"
