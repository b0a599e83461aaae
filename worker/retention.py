"""Retention: finished history older than a cutoff, deleted in small batches.

What goes: requests in a terminal state, created and last changed before the cutoff, with
the rows that belong to them (`DEPENDENTS`: their attempts and callback tries); webhook
events received before it and already acted on (`AGED`).

What stays, always:
- waiting and in-flight requests (`queued`, `retrying`, `dispatching`, and any state not
  terminal), however old;
- the request holding each user's newest attempt (the highest `lane_free_us`): it is the
  pacing floor the dispatch falls back on when Redis lost the lane, so pruning never lets
  a call start early;
- unprocessed webhook events.

An `Idempotency-Key` lives on its request, so it is remembered for the retention period:
after its request is pruned, the same key makes a new request.

Each batch is one short transaction: candidates are locked `FOR UPDATE SKIP LOCKED` (a row
a dispatch or a retry is changing is left for the next run), re-checked by the lock, then
deleted with their dependents. No lock outlives a batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Column,
    ColumnElement,
    CursorResult,
    Delete,
    Table,
    and_,
    delete,
    exists,
    func,
    select,
    tuple_,
)
from sqlalchemy.orm import Session, aliased

from worker.context import Context
from worker.models import (
    TERMINAL,
    CallbackDelivery,
    DistributionAttempt,
    DistributionRequest,
    WebhookEvent,
    utcnow,
)

log = logging.getLogger(__name__)
BATCH = 500
# Rest after each batch, as a share of the batch's time: a prune then takes at most a fifth
# of one database backend, and the dispatch beside it keeps the rest of the machine.
PAUSE = 4.0
# Per housekeeping run (every 10 s): 2,500 requests, ~21 M a day, far above any intake.
SCHEDULED_BATCHES = 5

R = cast(Table, DistributionRequest.__table__).c
A = cast(Table, DistributionAttempt.__table__).c
W = cast(Table, WebhookEvent.__table__).c
CB = cast(Table, CallbackDelivery.__table__).c

# Tables whose rows belong to a request: (table, the column naming it). Deleted before
# the request itself.
DEPENDENTS: list[tuple[Table, Column[Any]]] = [
    (cast(Table, DistributionAttempt.__table__), A.request_id),
    (cast(Table, CallbackDelivery.__table__), CB.request_id),
]
# Tables pruned by their own age: (table, primary key, age column, "done with" condition).
AGED: list[tuple[Table, Column[Any], Column[Any], ColumnElement[bool]]] = [
    (cast(Table, WebhookEvent.__table__), W.id, W.received_at, W.processed_at.is_not(None)),
]


@dataclass
class Pruned:
    """Rows deleted (or that would be), by table."""

    rows: dict[str, int] = field(default_factory=dict)

    def add(self, table: str, n: int) -> None:
        """Count `n` more rows of `table`."""
        self.rows[table] = self.rows.get(table, 0) + n

    def total(self) -> int:
        """Every row, every table."""
        return sum(self.rows.values())


def cutoff_for(days: float, now: datetime | None = None) -> datetime:
    """The instant `days` ago."""
    return (now or utcnow()) - timedelta(days=days)


def holds_floor() -> ColumnElement[bool]:
    """The request owns its user's newest attempt (the pacing floor): never pruned."""
    newest = aliased(DistributionAttempt)
    floor = select(func.max(newest.lane_free_us)).where(newest.user_id == A.user_id)
    return exists().where(A.request_id == R.id, A.lane_free_us >= floor.scalar_subquery())


def prunable(cutoff: datetime) -> ColumnElement[bool]:
    """Finished before `cutoff`, and not the pacing floor of its user."""
    return and_(
        R.created_at < cutoff,
        R.updated_at < cutoff,
        R.state.in_([s.value for s in TERMINAL]),
        ~holds_floor(),
    )


def prune(
    session: Session,
    cutoff: datetime,
    *,
    batch: int = BATCH,
    max_batches: int | None = None,
    pause: float = PAUSE,
) -> Pruned:
    """Delete what `cutoff` lets go, `batch` requests per transaction; what went. After
    each batch it rests `pause` times as long as the batch took, leaving the database
    (and the machine) to the dispatch in between."""
    done, after, batches = Pruned(), None, 0
    while max_batches is None or batches < max_batches:
        started = time.monotonic()
        after, n = _request_batch(session, cutoff, after, batch, done)
        n += sum(_aged_batch(session, spec, cutoff, batch, done) for spec in AGED)
        batches += 1
        if n == 0:
            break
        time.sleep((time.monotonic() - started) * pause)
    return done


def _request_batch(
    session: Session, cutoff: datetime, after: Any, batch: int, done: Pruned
) -> tuple[Any, int]:
    # Keyset over ix_requests_created: rows kept (waiting, floors) are passed over once.
    q = select(R.id, R.created_at).where(prunable(cutoff))
    if after is not None:
        q = q.where(tuple_(R.created_at, R.id) > tuple_(*after))
    q = q.order_by(R.created_at, R.id).limit(batch).with_for_update(skip_locked=True)
    with session.begin():
        rows = session.execute(q).all()
        ids = [r.id for r in rows]
        if not ids:
            return after, 0
        for table, column in DEPENDENTS:
            done.add(table.name, _deleted(session, delete(table).where(column.in_(ids))))
        requests = cast(Table, DistributionRequest.__table__)
        done.add(requests.name, _deleted(session, delete(requests).where(R.id.in_(ids))))
    return (rows[-1].created_at, rows[-1].id), len(ids)


def _deleted(session: Session, statement: Delete) -> int:
    return cast(CursorResult[Any], session.execute(statement)).rowcount


def _aged_batch(session: Session, spec: Any, cutoff: datetime, batch: int, done: Pruned) -> int:
    table, key, age, finished = spec
    chosen = select(key).where(age < cutoff, finished).order_by(age).limit(batch)
    with session.begin():
        ids = list(session.scalars(chosen.with_for_update(skip_locked=True)).all())
        if ids:
            done.add(table.name, _deleted(session, delete(table).where(key.in_(ids))))
    return len(ids)


def would_prune(session: Session, cutoff: datetime) -> Pruned:
    """What `prune` would delete now, counted, nothing deleted."""
    out = Pruned()
    ids = select(R.id).where(prunable(cutoff)).scalar_subquery()
    for table, column in DEPENDENTS:
        n = session.scalar(select(func.count()).select_from(table).where(column.in_(ids)))
        out.add(table.name, n or 0)
    requests = cast(Table, DistributionRequest.__table__)
    n = session.scalar(select(func.count()).select_from(requests).where(prunable(cutoff)))
    out.add(requests.name, n or 0)
    for table, _key, age, finished in AGED:
        n = session.scalar(select(func.count()).select_from(table).where(age < cutoff, finished))
        out.add(table.name, n or 0)
    session.rollback()
    return out


def run(ctx: Context, days: float, *, dry_run: bool = False) -> str:
    """`spdist prune`: prune (or count) what is older than `days`; one line saying what."""
    cutoff = cutoff_for(days)
    with ctx.sessions() as session:
        done = would_prune(session, cutoff) if dry_run else prune(session, cutoff)
    verb = "would delete" if dry_run else "deleted"
    counts = ", ".join(f"{n} {table}" for table, n in done.rows.items())
    return f"{verb} {counts or 'nothing'} (finished before {cutoff.isoformat()})"


def scheduled(ctx: Context, max_batches: int = SCHEDULED_BATCHES) -> Pruned:
    """The scheduler's share when SPDIST_RETENTION_DAYS is set: a few batches, no rest (it
    runs in a worker's pool slot, so it holds the slot briefly rather than long)."""
    days = ctx.settings.retention_days
    if days is None:
        return Pruned()
    with ctx.sessions() as session:
        done = prune(session, cutoff_for(days), max_batches=max_batches, pause=0.0)
    if done.total():
        log.info("retention pruned %s", done.rows)
    return done
