"""Next free slots of many lanes at once: one Redis command (the pacer's next_free.lua) and
at most one SQL read per 1,000 lanes (`spdist lanes`, /metrics), never a round trip per lane."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

from redis import RedisError
from redis.commands.core import Script
from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.context import Context
from worker.models import PacingFence, utcnow
from worker.outcomes import from_us
from worker.pacer import keys, load_script

log = logging.getLogger(__name__)
CHUNK = 1000


def next_slots(ctx: Context, session: Session, user_ids: Sequence[str]) -> dict[str, datetime]:
    """When each lane's next call may start: the pacer's state, else the SQL floor."""
    free = _redis_next_free(ctx, user_ids)
    missing = [u for u in user_ids if not free.get(u)]
    return _slots(user_ids, free, sql_floors(session, missing) if missing else {})


def next_slots_given_floors(
    ctx: Context, user_ids: Sequence[str], floors: dict[str, int], now: datetime
) -> dict[str, datetime]:
    """`next_slots` for a caller whose own SQL read brought every lane's fence already
    (/metrics joins them into its one statement), as of its `now`: only the Redis round
    trip is left."""
    return _slots(user_ids, _redis_next_free(ctx, user_ids), floors, now)


def _slots(
    user_ids: Sequence[str],
    free: dict[str, int],
    floors: dict[str, int],
    now: datetime | None = None,
) -> dict[str, datetime]:
    now = now or utcnow()
    out: dict[str, datetime] = {}
    for user_id in user_ids:
        us = free.get(user_id) or floors.get(user_id)
        out[user_id] = max(now, from_us(us)) if us else now
    return out


def _redis_next_free(ctx: Context, user_ids: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        script = _script(ctx.pacer.redis)
        for start in range(0, len(user_ids), CHUNK):
            chunk = user_ids[start : start + CHUNK]
            values = script(keys=[keys.lane_state(u) for u in chunk]).split(b",")
            out.update({u: int(v) for u, v in zip(chunk, values, strict=True) if v})
    except RedisError as exc:
        log.info("lane views without Redis: %s", type(exc).__name__)
        return {}
    return out


_SCRIPTS: WeakKeyDictionary[Any, Script] = WeakKeyDictionary()


def _script(client: Any) -> Script:
    """next_free.lua registered once per client (redis-py reloads it after a restart)."""
    script = _SCRIPTS.get(client)
    if script is None:
        script = _SCRIPTS[client] = client.register_script(load_script("next_free.lua"))
    return script


def sql_floors(session: Session, user_ids: Sequence[str]) -> dict[str, int]:
    """Each user's pacing fence (users with none are left out): primary-key probes."""
    out: dict[str, int] = {}
    for start in range(0, len(user_ids), CHUNK):
        chunk = list(user_ids[start : start + CHUNK])
        f = PacingFence
        rows = session.execute(select(f.user_id, f.not_before_us).where(f.user_id.in_(chunk)))
        out.update({u: int(us) for u, us in rows.all() if us})
    return out
