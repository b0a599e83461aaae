"""The ledger's SQL: prebuilt Core statements, kept together as data and built once (on the
hot path an ORM session costs several times what the statement does). Both adapters run
them; the `*_ONE_STATEMENT` forms are PostgreSQL's (writable CTEs), the `*_DIRECT` ones are
compiled for psycopg (direct.py).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from worker.ledger.direct import Direct
from worker.ledger.port import Snapshot
from worker.models import (
    PENDING,
    WAITING,
    DistributionAttempt,
    DistributionRequest,
    PacingFence,
    State,
    WebhookEvent,
)

REQUESTS = cast(Table, DistributionRequest.__table__)
ATTEMPTS = cast(Table, DistributionAttempt.__table__)
FENCES = cast(Table, PacingFence.__table__)
R = REQUESTS.c
A = ATTEMPTS.c
F = FENCES.c
W = cast(Table, WebhookEvent.__table__).c


COLUMNS = [getattr(R, name) for name in Snapshot.__dataclass_fields__]


# A state written into the SQL rather than bound, like `waiting()`'s.
QUEUED: ColumnElement[str] = literal_column(f"'{State.QUEUED.value}'")


def waiting(state: Any) -> ColumnElement[bool]:
    """`state IN ('queued', 'retrying')` written into the SQL: `in_()` would make an
    "expanding" parameter, rendered again at every execution."""
    return cast(ColumnElement[bool], state.in_([literal_column(f"'{s.value}'") for s in WAITING]))


# The user's pacing fence: one primary-key probe, however long the history.
FLOOR = select(F.not_before_us).where(F.user_id == bindparam("uid"))

_OTHER = REQUESTS.alias("other")
LOAD = select(
    *COLUMNS,
    select(F.not_before_us).where(F.user_id == R.user_id).scalar_subquery(),
    exists().where(_OTHER.c.user_id == R.user_id, waiting(_OTHER.c.state), _OTHER.c.id != R.id),
    exists().where(W.upload_id == R.upload_id, W.event == literal_column("'build.rejected'")),
).where(R.id == bindparam("rid"))

# The lane's waiting requests, each row carrying the floor too: one round trip.
WAITING_IN_LANE = select(*COLUMNS, FLOOR.scalar_subquery()).where(
    R.user_id == bindparam("uid"), waiting(R.state)
)

CLAIM = (
    update(REQUESTS)
    .where(
        R.id == bindparam("rid"),
        waiting(R.state),
        R.attempt_count == bindparam("was"),
    )
    .values(
        state=State.DISPATCHING,
        attempt_count=bindparam("number"),
        lease_expires_at=bindparam("lease"),
        dispatched_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
)

ADD_ATTEMPT = insert(ATTEMPTS)

UNCLAIM_REQUEST = (
    update(REQUESTS)
    .where(
        R.id == bindparam("rid"), R.state == State.DISPATCHING, R.attempt_count == bindparam("n")
    )
    .values(
        state=bindparam("back_to"),
        attempt_count=bindparam("was"),
        lease_expires_at=None,
        updated_at=bindparam("now"),
    )
)

DROP_ATTEMPT = delete(ATTEMPTS).where(A.request_id == bindparam("rid"), A.number == bindparam("n"))

# What an answer changes on its request (outcomes.Plan.request_values), fenced.
MOVE = (
    update(REQUESTS)
    .where(
        R.id == bindparam("rid"), R.state == State.DISPATCHING, R.attempt_count == bindparam("n")
    )
    .values(
        lease_expires_at=None,
        updated_at=bindparam("now"),
        state=bindparam("state"),
        last_message=bindparam("last_message"),
        next_attempt_at=bindparam("next_attempt_at"),
        failures=bindparam("failures"),
        processing_since=bindparam("processing_since"),
    )
)

COMPLETE_ATTEMPT = (
    update(ATTEMPTS)
    .where(A.request_id == bindparam("rid"), A.number == bindparam("n"))
    .values(
        finished_at=bindparam("now"),
        http_status=bindparam("http_status"),
        outcome=bindparam("outcome"),
        message=bindparam("message"),
        lane_free_us=bindparam("lane_free_us"),
    )
)

# The pacing fence. The claim moves it to the worst case of its call (`lane_free_us` of the
# new attempt) only where it stands at or before the granted slot; the record brings it back
# to the actual send plus the gap, and an undone claim to what the other attempts left;
# both only while it still holds this claim's value (a later claim may have moved it since).
_FENCE_COLUMNS = ["user_id", "not_before_us", "updated_at"]
_FENCE_VALUES = (
    bindparam("uid", type_=F.user_id.type),
    bindparam("lane_free_us", type_=F.not_before_us.type),
    bindparam("now", type_=F.updated_at.type),
)
_FENCE_OPEN = F.not_before_us <= bindparam("slot_us", type_=F.not_before_us.type)


def _fence_upsert(stmt: Any) -> Any:
    excluded = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[F.user_id],
        set_={"not_before_us": excluded.not_before_us, "updated_at": excluded.updated_at},
        where=_FENCE_OPEN,
    )


# SQLite: the first statement of the claim's transaction, so it also takes the write lock.
FENCE_CLAIM = _fence_upsert(
    sqlite_insert(FENCES).values(dict(zip(_FENCE_COLUMNS, _FENCE_VALUES, strict=True)))
)

FENCE_SETTLE = (
    update(FENCES)
    .where(F.user_id == bindparam("uid"), F.not_before_us == bindparam("fence_was"))
    .values(not_before_us=bindparam("lane_free_us"), updated_at=bindparam("now"))
)

_OTHER_ATTEMPTS_FREE = (
    select(func.max(A.lane_free_us))
    .where(
        A.user_id == bindparam("uid"),
        ~((A.request_id == bindparam("rid")) & (A.number == bindparam("n"))),
    )
    .scalar_subquery()
)
FENCE_RESTORE = (
    update(FENCES)
    .where(F.user_id == bindparam("uid"), F.not_before_us == bindparam("fence_was"))
    .values(not_before_us=func.coalesce(_OTHER_ATTEMPTS_FREE, 0), updated_at=bindparam("now"))
)

# PostgreSQL: each of claim, record and unclaim as ONE statement (writable CTEs), so on an
# autocommit connection each is one round trip and still all-or-nothing. The claim moves
# the fence first (its row lock serializes a user's claims), and claims the request only
# where the fence moved; it answers the new attempt's number and the fence as it stood.
_CLAIMABLE = exists().where(
    R.id == bindparam("rid"), waiting(R.state), R.attempt_count == bindparam("was")
)
_FENCE = (
    _fence_upsert(
        pg_insert(FENCES).from_select(_FENCE_COLUMNS, select(*_FENCE_VALUES).where(_CLAIMABLE))
    )
    .returning(F.user_id)
    .cte("fence")
)
_CLAIMED = (
    CLAIM.where(exists(select(_FENCE.c.user_id)))
    .returning(R.id, R.user_id, R.attempt_count)
    .cte("claimed")
)
_ADDED = (
    insert(ATTEMPTS)
    .from_select(
        ["request_id", "number", "user_id", "started_at", "slot_us", "lane_free_us", "worker"],
        select(
            _CLAIMED.c.id,
            _CLAIMED.c.attempt_count,
            _CLAIMED.c.user_id,
            bindparam("started_at", type_=A.started_at.type),
            bindparam("slot_us", type_=A.slot_us.type),
            bindparam("lane_free_us", type_=A.lane_free_us.type),
            bindparam("worker", type_=A.worker.type),
        ),
    )
    .returning(A.number)
    .cte("added")
)
CLAIM_ONE_STATEMENT = select(select(_ADDED.c.number).scalar_subquery(), FLOOR.scalar_subquery())

_MOVED = MOVE.returning(R.id).cte("moved")
RECORD_ONE_STATEMENT = (
    COMPLETE_ATTEMPT.where(A.request_id.in_(select(_MOVED.c.id)))
    .add_cte(_MOVED)
    .add_cte(FENCE_SETTLE.cte("fence"))
    .returning(A.id)
)

_DROPPED = DROP_ATTEMPT.returning(literal_column("1")).cte("dropped")
UNCLAIM_ONE_STATEMENT = UNCLAIM_REQUEST.add_cte(_DROPPED).add_cte(FENCE_RESTORE.cte("fence"))


OLDEST_QUEUED_OF_PROJECT = (
    select(R.id)
    .where(R.project_id == bindparam("pid"), R.user_id == bindparam("uid"), R.state == QUEUED)
    .order_by(R.seq)
    .limit(1)
    .scalar_subquery()
)

SUPERSEDE = (
    update(REQUESTS)
    .where(R.id == OLDEST_QUEUED_OF_PROJECT, R.state == QUEUED)
    .values(state=State.SUPERSEDED, superseded_by=bindparam("by"), updated_at=bindparam("now"))
    .returning(R.id, R.seq, R.project_id, R.upload_id)
)

INSERT_REQUEST = insert(REQUESTS)

# PostgreSQL: supersede and insert as ONE statement; the new row takes the old one's seq.
NEW_REQUEST_COLUMNS = (
    "id",
    "user_id",
    "project_id",
    "upload_id",
    "priority",
    "coalesce",
    "seq",
    "state",
    "created_at",
    "updated_at",
    "attempt_count",
    "failures",
    "idempotency_key",
    "request_hash",
    "created_by",
    "callback_url",
)
_OLD = SUPERSEDE.cte("old")


def _new_value(name: str) -> Any:
    value = bindparam(f"new_{name}", type_=REQUESTS.c[name].type)
    return func.coalesce(select(_OLD.c.seq).scalar_subquery(), value) if name == "seq" else value


SUPERSEDE_AND_INSERT = (
    insert(REQUESTS)
    .from_select(NEW_REQUEST_COLUMNS, select(*(_new_value(n) for n in NEW_REQUEST_COLUMNS)))
    .add_cte(_OLD)
    .returning(*(select(c).scalar_subquery().label(c.name) for c in _OLD.c))
)


# Webhook events of an upload not acted on yet: the dispatch's check after its record.
PENDING_EVENTS: Any = (
    select(literal_column("1"))
    .where(W.upload_id == bindparam("upload"), W.processed_at.is_(None))
    .limit(1)
)

LOAD_DIRECT = Direct(LOAD)
PENDING_EVENTS_DIRECT = Direct(PENDING_EVENTS)
CLAIM_DIRECT = Direct(CLAIM_ONE_STATEMENT)
RECORD_DIRECT = Direct(RECORD_ONE_STATEMENT)
UNCLAIM_DIRECT = Direct(UNCLAIM_ONE_STATEMENT)
# Its generic plan for "oldest queued request of this project" walked the user's whole lane,
# so each insert cost more as the table grew; planned from the values it is one probe of
# ix_requests_project_lane, flat (BENCHMARKS.md, design measurements).
SUPERSEDE_AND_INSERT_DIRECT = Direct(SUPERSEDE_AND_INSERT, plan_each_time=True, named=True)


def pending(state: Any) -> ColumnElement[bool]:
    """`state IN ('held', 'queued', 'retrying')`, written into the SQL: a held request takes
    no slot but is waiting all the same, and counts against the cap."""
    return state.in_([literal_column(f"'{s.value}'") for s in PENDING])  # type: ignore[no-any-return]


COUNT_WAITING = (
    select(func.count())
    .select_from(REQUESTS)
    .where(R.user_id == bindparam("uid"), pending(R.state))
)
# The API's batched enqueue (PostgreSQL): the waiting of every user of a batch at once.
COUNT_WAITING_BY_USER = (
    select(R.user_id, func.count())
    .where(R.user_id == func.any(bindparam("uids")), pending(R.state))
    .group_by(R.user_id)
)
COUNT_WAITING_BY_USER_DIRECT = Direct(COUNT_WAITING_BY_USER)

# The metric triggers' deltas (PostgreSQL's, migration 0006) folded into their totals.
# One statement: the deltas taken are gone exactly when their sum is in the totals.
# SKIP LOCKED lets two compactions run side by side on disjoint deltas; the totals are
# upserted in key order, so the two never wait on each other in a cycle.
COMPACT_TALLIES = text("""
WITH taken AS (
    DELETE FROM metric_deltas WHERE id IN (
        SELECT id FROM metric_deltas ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED)
    RETURNING series, label, n, total),
folded AS (
    INSERT INTO metric_totals AS t (series, label, n, total)
    SELECT series, label, sum(n), sum(total) FROM taken GROUP BY series, label
    ORDER BY series, label
    ON CONFLICT (series, label) DO UPDATE
    SET n = t.n + excluded.n, total = t.total + excluded.total
    RETURNING 1)
SELECT (SELECT count(*) FROM taken), (SELECT count(*) FROM folded)
""")
