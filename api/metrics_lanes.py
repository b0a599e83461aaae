"""The per-lane series of /metrics: one SQL statement and one Redis round trip for every lane
together, written as Prometheus text here.

- `spdist_lane_depth{user_id}`: requests waiting (`queued`, `retrying`);
- `spdist_next_slot_seconds{user_id}`: seconds until the lane's next free slot (the pacer's
  `next_free`, else the SQL fence);
- `spdist_lane_ready{user_id}`: requests that may go now (not retrying later);
- `spdist_lane_stalled_seconds{user_id}`: how long the lane has had work ready and no call;
- `spdist_lane_calls_15m{user_id}`: calls made in the last 15 minutes.

The last three only for lanes with work ready; every series for at most `MAX_USERS` lanes,
the deepest. The statement reads the waiting rows, each lane's fence (a primary-key probe)
and, through `ix_attempts_user_free`, its newest attempt and those of the last 15 minutes: a
user's year of attempts is never scanned. On PostgreSQL it runs with JIT off: a table of
millions of rows makes the planner's cost estimate pass `jit_above_cost`, and compiling the
statement then costs more than running it.

Thousands of samples go through prometheus_client's family objects slowly, so `write`
produces the same text as its `generate_latest` (tests/unit/test_metrics_text.py holds it to
that).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from prometheus_client.utils import floatToGoString
from sqlalchemy import Select, Table, func, or_, select
from sqlalchemy.orm import Session

from worker import lane_views
from worker.context import Context
from worker.models import WAITING, DistributionAttempt, DistributionRequest, PacingFence, utcnow
from worker.pacer import US

MAX_USERS = 1000  # per-user series beyond this many lanes are left out
WINDOW = timedelta(minutes=15)
# `lane_free_us` (Redis clock) is at least its attempt's start (the writer's clock); this
# margin covers the two clocks' disagreement in the index range of the recent calls.
CLOCK_MARGIN = timedelta(hours=1)

R = cast(Table, DistributionRequest.__table__).c
A = cast(Table, DistributionAttempt.__table__).c
FENCES = cast(Table, PacingFence.__table__)
F = FENCES.c


@dataclass(frozen=True)
class Lane:
    """One lane's row of the statement."""

    user_id: str
    depth: int
    ready: int
    ready_since: datetime | None
    floor_us: int | None
    last_call: datetime | None
    calls: int


@dataclass(frozen=True)
class Family:
    """A gauge family: name, help text, and its samples, one per label value."""

    name: str
    doc: str
    samples: Sequence[tuple[str, float]]
    label: str = "user_id"


def statement(now: datetime, max_users: int = MAX_USERS) -> Select[Any]:
    """Every lane's figures, deepest first."""
    ready = or_(R.next_attempt_at.is_(None), R.next_attempt_at <= now)
    lanes = (
        select(
            R.user_id,
            func.count().label("depth"),
            func.count().filter(ready).label("ready"),
            func.min(func.coalesce(R.next_attempt_at, R.created_at)).filter(ready).label("since"),
        )
        .where(R.state.in_([s.value for s in WAITING]))
        .group_by(R.user_id)
        .order_by(func.count().desc(), R.user_id)
        .limit(max_users)
        .cte("lanes")
    )
    last = (
        select(A.started_at)
        .where(A.user_id == lanes.c.user_id)
        .order_by(A.lane_free_us.desc())
        .limit(1)
        .scalar_subquery()
    )
    since = now - WINDOW
    calls = (
        select(func.count())
        .where(
            A.user_id == lanes.c.user_id,
            A.lane_free_us >= int((since - CLOCK_MARGIN).timestamp() * US),
            A.started_at >= since,
        )
        .scalar_subquery()
    )
    return (
        select(lanes.c.user_id, lanes.c.depth, lanes.c.ready, lanes.c.since, F.not_before_us)
        .add_columns(last, calls)
        .select_from(lanes.outerjoin(FENCES, F.user_id == lanes.c.user_id))
        .order_by(lanes.c.depth.desc(), lanes.c.user_id)
    )


def read(ctx: Context, session: Session, now: datetime) -> list[Lane]:
    """The statement's rows (JIT off for it on PostgreSQL)."""
    ctx.ledger.for_large_read(session.connection())
    return [Lane(*row) for row in session.execute(statement(now)).all()]


def families(ctx: Context, lanes: Sequence[Lane], now: datetime) -> list[Family]:
    """The five series of `lanes`, the next slots from Redis in one round trip."""
    floors = {lane.user_id: int(lane.floor_us) for lane in lanes if lane.floor_us}
    slots = lane_views.next_slots_given_floors(ctx, [x.user_id for x in lanes], floors, now)
    ready = [lane for lane in lanes if lane.ready]
    return [
        Family(
            "spdist_lane_depth", "Requests waiting per user.", [(x.user_id, x.depth) for x in lanes]
        ),
        Family(
            "spdist_next_slot_seconds",
            "Seconds until the user's next free slot.",
            [(x.user_id, max(0.0, (slots[x.user_id] - now).total_seconds())) for x in lanes],
        ),
        Family(
            "spdist_lane_ready", "Requests that may go now.", [(x.user_id, x.ready) for x in ready]
        ),
        Family(
            "spdist_lane_stalled_seconds",
            "Seconds the lane has had work ready and made no call.",
            [(x.user_id, _stalled(x, now)) for x in ready],
        ),
        Family(
            "spdist_lane_calls_15m",
            "Calls made in the last 15 minutes by a lane with work ready.",
            [(x.user_id, x.calls) for x in ready],
        ),
    ]


def _stalled(lane: Lane, now: datetime) -> float:
    quiet_since = max(t for t in (lane.ready_since, lane.last_call) if t is not None)
    return max(0.0, (now - quiet_since).total_seconds())


def write(families: Iterable[Family]) -> str:
    """Prometheus text exposition of gauge families, as `generate_latest` writes it."""
    out: list[str] = []
    labels: dict[str, str] = {}  # a lane's label is in every family: escaped once
    for f in families:
        out.append(f"# HELP {f.name} {_help(f.doc)}\n# TYPE {f.name} gauge\n")
        for v, x in f.samples:
            label = labels.get(v)
            if label is None:
                label = labels[v] = _label(v)
            out.append(f'{f.name}{{{f.label}="{label}"}} {_value(x)}\n')
    return "".join(out)


def _value(x: float) -> str:
    """floatToGoString's text, for the counts without its float round trip."""
    if type(x) is int and 0 <= x < 1_000_000:  # below Go's switch to an exponent
        return f"{x}.0"
    return str(floatToGoString(x))


def _help(doc: str) -> str:
    return doc.replace("\\", r"\\").replace("\n", r"\n")


def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def exposition(ctx: Context) -> str:
    """The lane series' text for one scrape."""
    with ctx.sessions() as session:
        now = utcnow()
        lanes = read(ctx, session, now)
        session.rollback()  # ends the transaction SET LOCAL lived in
    return write(families(ctx, lanes, now))
