"""The dispatch's SQL: prebuilt Core statements, run on the one connection a dispatch holds.

Kept together, as data, and built once: on the hot path an ORM session costs about six
times what the statement itself does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, cast

import psycopg
from psycopg.rows import namedtuple_row, tuple_row
from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Connection,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from worker.models import (
    WAITING,
    DistributionAttempt,
    DistributionRequest,
    PacingFence,
    State,
    WebhookEvent,
    utcnow,
)

REQUESTS = cast(Table, DistributionRequest.__table__)
ATTEMPTS = cast(Table, DistributionAttempt.__table__)
FENCES = cast(Table, PacingFence.__table__)
R = REQUESTS.c
A = ATTEMPTS.c
F = FENCES.c
W = cast(Table, WebhookEvent.__table__).c


@dataclass(frozen=True)
class Snapshot:
    """A request as a dispatch read it."""

    id: str
    user_id: str
    project_id: str
    upload_id: str
    priority: int
    seq: int
    state: str
    next_attempt_at: datetime | None
    attempt_count: int
    failures: int
    processing_since: datetime | None


@dataclass(frozen=True)
class Loaded:
    """What a dispatch reads first, in one statement: the request, its lane's floor (the
    user's pacing fence, 0 if none) and whether it is the only waiting request of its lane
    (then a lane without Redis state needs no refill)."""

    request: Snapshot
    floor_us: int
    alone: bool
    rejected: bool = False  # Streampixel rejected this build: no call may be made for it


@dataclass(frozen=True)
class Fenced:
    """A claim refused by the user's pacing fence: no call may leave before `not_before_us`
    (Redis clock), later than the slot the pacer granted."""

    not_before_us: int


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
    exists().where(_OTHER.c.user_id == R.user_id, waiting(_OTHER.c.state),
                   _OTHER.c.id != R.id),
    exists().where(W.upload_id == R.upload_id, W.event == literal_column("'build.rejected'")),
).where(R.id == bindparam("rid"))  # fmt: skip

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
    .where(R.id == bindparam("rid"), R.state == State.DISPATCHING,
           R.attempt_count == bindparam("n"))
    .values(
        lease_expires_at=None,
        updated_at=bindparam("now"),
        state=bindparam("state"),
        last_message=bindparam("last_message"),
        next_attempt_at=bindparam("next_attempt_at"),
        failures=bindparam("failures"),
        processing_since=bindparam("processing_since"),
    )
)  # fmt: skip

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
_FENCE_VALUES = (bindparam("uid", type_=F.user_id.type),
                 bindparam("lane_free_us", type_=F.not_before_us.type),
                 bindparam("now", type_=F.updated_at.type))  # fmt: skip
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
    .where(A.user_id == bindparam("uid"),
           ~((A.request_id == bindparam("rid")) & (A.number == bindparam("n"))))
    .scalar_subquery()
)  # fmt: skip
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
    _fence_upsert(pg_insert(FENCES).from_select(_FENCE_COLUMNS,
                                                select(*_FENCE_VALUES).where(_CLAIMABLE)))
    .returning(F.user_id)
    .cte("fence")
)  # fmt: skip
_CLAIMED = (
    CLAIM.where(exists(select(_FENCE.c.user_id)))
    .returning(R.id, R.user_id, R.attempt_count)
    .cte("claimed")
)
_ADDED = (
    insert(ATTEMPTS)
    .from_select(
        ["request_id", "number", "user_id", "started_at", "slot_us", "lane_free_us", "worker"],
        select(_CLAIMED.c.id, _CLAIMED.c.attempt_count, _CLAIMED.c.user_id,
               bindparam("started_at", type_=A.started_at.type),
               bindparam("slot_us", type_=A.slot_us.type),
               bindparam("lane_free_us", type_=A.lane_free_us.type),
               bindparam("worker", type_=A.worker.type)),
    )
    .returning(A.number)
    .cte("added")
)  # fmt: skip
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
    .where(R.project_id == bindparam("pid"), R.user_id == bindparam("uid"),
           R.state == QUEUED)
    .order_by(R.seq)
    .limit(1)
    .scalar_subquery()
)  # fmt: skip

SUPERSEDE = (
    update(REQUESTS)
    .where(R.id == OLDEST_QUEUED_OF_PROJECT, R.state == QUEUED)
    .values(state=State.SUPERSEDED, superseded_by=bindparam("by"), updated_at=bindparam("now"))
    .returning(R.id, R.seq, R.project_id, R.upload_id)
)

INSERT_REQUEST = insert(REQUESTS)

# PostgreSQL: supersede and insert as ONE statement; the new row takes the old one's seq.
NEW_REQUEST_COLUMNS = ("id", "user_id", "project_id", "upload_id", "priority", "coalesce",
                       "seq", "state", "created_at", "updated_at", "attempt_count",
                       "failures", "idempotency_key", "request_hash", "created_by")  # fmt: skip
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


class Direct:
    """A prebuilt statement compiled once for PostgreSQL and run on the psycopg connection
    underneath the SQLAlchemy one. On the hot path SQLAlchemy's execution context cost more
    CPU than the statement (LOAD: 130 µs against 55 µs run directly). Errors come out as
    SQLAlchemy's, and a lost connection is invalidated, as `Connection.execute` does."""

    def __init__(
        self, statement: ClauseElement, *, plan_each_time: bool = False, named: bool = False
    ) -> None:
        compiled = statement.compile(dialect=psycopg_dialect())
        self.sql = str(compiled)
        self.defaults = {k: _plain(v) for k, v in compiled.params.items()}
        # psycopg prepares a statement run five times on a connection, and PostgreSQL then
        # settles on a generic plan, made without the parameters' values. `plan_each_time`
        # never prepares it: each run is planned from its values.
        self.prepare: bool | None = False if plan_each_time else None
        # Plain tuples unless the caller reads columns by name: a named tuple cost about a
        # quarter of a dispatch statement's client CPU.
        self.row_factory: Any = namedtuple_row if named else tuple_row

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every parameter of the statement, as psycopg takes them."""
        return {**self.defaults, **{k: _plain(v) for k, v in params.items()}}

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[Any]:
        """Run it on `conn` (PostgreSQL, autocommit) and return its rows."""
        values = self.values(params)
        dbapi_conn = conn.connection.driver_connection
        try:
            cur = dbapi_conn.cursor(row_factory=self.row_factory)  # type: ignore[union-attr]
            cur.execute(self.sql, values, prepare=self.prepare)
            return cur.fetchall() if cur.description else []
        except psycopg.Error as err:
            raw: Any = err
            lost = conn.dialect.is_disconnect(raw, conn.connection.dbapi_connection, None)
            if lost:
                conn.invalidate(err)
            raise DBAPIError.instance(self.sql, values, err, psycopg.Error,
                                      connection_invalidated=lost) from err  # fmt: skip


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


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
# so each insert cost more as the table grew (0.4 -> 2 ms of server CPU over 10,000 rows);
# planned from the values it is one probe of ix_requests_project_lane (~0.3 ms, flat).
SUPERSEDE_AND_INSERT_DIRECT = Direct(SUPERSEDE_AND_INSERT, plan_each_time=True, named=True)


def supersede(conn: Connection, new: dict[str, Any]) -> Any:
    """Mark the project's oldest queued request superseded by `new`; (id, seq, project_id,
    upload_id) of the one replaced, or None. One UPDATE … RETURNING."""
    params = {"pid": new["project_id"], "uid": new["user_id"], "by": new["id"],
              "now": new["updated_at"]}  # fmt: skip
    return conn.execute(SUPERSEDE, params).first()


def supersede_and_insert(conn: Connection, values: dict[str, Any]) -> Any:
    """`supersede` then `insert_request` (taking the old seq) in one statement; PostgreSQL."""
    return superseded(SUPERSEDE_AND_INSERT_DIRECT.rows(conn, supersede_and_insert_params(values)))


def superseded(rows: list[Any]) -> Any:
    """From SUPERSEDE_AND_INSERT's rows: the request it superseded, or None."""
    row = rows[0] if rows else None
    return row if row is not None and row[0] is not None else None


def supersede_and_insert_params(values: dict[str, Any]) -> dict[str, Any]:
    """SUPERSEDE_AND_INSERT's parameters for the new request's row `values`."""
    params = {f"new_{n}": values[n] for n in NEW_REQUEST_COLUMNS}
    params.update(pid=values["project_id"], uid=values["user_id"], by=values["id"],
                  now=values["updated_at"])  # fmt: skip
    return params


def insert_request(conn: Connection, values: dict[str, Any]) -> None:
    """Store a new request."""
    conn.execute(INSERT_REQUEST, values)


def one_statement(conn: Connection) -> bool:
    """Whether this connection runs claim, record and unclaim as single statements."""
    return conn.dialect.name == "postgresql"


def load(conn: Connection, request_id: str) -> Loaded | None:
    """The request with its lane's floor, or None."""
    if one_statement(conn):
        rows = LOAD_DIRECT.rows(conn, {"rid": request_id})
        row = rows[0] if rows else None
    else:
        row = conn.execute(LOAD, {"rid": request_id}).first()
        conn.commit()
    if row is None:
        return None
    return Loaded(Snapshot(*row[:-3]), int(row[-3] or 0), not row[-2], bool(row[-1]))


def pending_events(conn: Connection, upload_id: str) -> bool:
    """Whether webhook events of this upload wait to be acted on."""
    if one_statement(conn):
        return bool(PENDING_EVENTS_DIRECT.rows(conn, {"upload": upload_id}))
    found = conn.execute(PENDING_EVENTS, {"upload": upload_id}).first()
    conn.commit()
    return found is not None


def waiting_and_floor(conn: Connection, user_id: str) -> tuple[list[Snapshot], int]:
    """The user's waiting requests, and the latest `lane_free_us` its attempts recorded."""
    rows = conn.execute(WAITING_IN_LANE, {"uid": user_id}).all()
    floor = rows[0][-1] if rows else conn.execute(FLOOR, {"uid": user_id}).scalar()
    conn.commit()
    return [Snapshot(*r[:-1]) for r in rows], int(floor or 0)


def claim(conn: Connection, req: Snapshot, now: datetime, lease: datetime,
          attempt: dict[str, Any]) -> int | Fenced | None:  # fmt: skip
    """Move the user's fence and claim the request (conditional UPDATE to `dispatching`
    plus the attempt row), committed: the attempt's number; Fenced when the fence stands
    after the granted slot (`attempt["slot_us"]`); None when the request is not claimable."""
    number = req.attempt_count + 1
    params = {"rid": req.id, "uid": req.user_id, "was": req.attempt_count, "number": number,
              "lease": lease, "now": now, **attempt}  # fmt: skip
    try:
        if one_statement(conn):
            got, fence = CLAIM_DIRECT.rows(conn, {**params, "started_at": now})[0]
            if got is not None:
                return number
            return Fenced(int(fence)) if (fence or 0) > attempt["slot_us"] else None
        if conn.execute(FENCE_CLAIM, params).rowcount != 1:
            fence = conn.execute(FLOOR, params).scalar()
            conn.rollback()
            return Fenced(int(fence or 0))
        if conn.execute(CLAIM, params).rowcount != 1:
            conn.rollback()
            return None
        conn.execute(ADD_ATTEMPT, {**attempt, "request_id": req.id, "number": number,
                                   "user_id": req.user_id, "started_at": now})  # fmt: skip
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return number


def restore_fence(conn: Connection, req: Snapshot, number: int, fence_was: int) -> None:
    """A claim that moved the fence made no call: give the fence back what the user's other
    attempts left, if it still holds that claim's value."""
    params = {"uid": req.user_id, "rid": req.id, "n": number, "fence_was": fence_was,
              "now": utcnow()}  # fmt: skip
    try:
        conn.execute(FENCE_RESTORE, params)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def unclaim(conn: Connection, req: Snapshot, number: int, fence_was: int) -> None:
    """No call was made: drop the attempt row, put the request back as it was, and give the
    fence back."""
    back = {"rid": req.id, "uid": req.user_id, "n": number, "back_to": req.state,
            "was": number - 1, "fence_was": fence_was, "now": utcnow()}  # fmt: skip
    try:
        if one_statement(conn):
            UNCLAIM_DIRECT.rows(conn, back)
        else:
            conn.execute(DROP_ATTEMPT, back)
            conn.execute(UNCLAIM_REQUEST, back)
            conn.execute(FENCE_RESTORE, back)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def record(conn: Connection, req: Snapshot, number: int, now: datetime,
           request_values: dict[str, Any], attempt_values: dict[str, Any],
           fence_was: int) -> bool:  # fmt: skip
    """Move the request and complete its attempt, fenced by the attempt number; bring the
    user's fence to the attempt's `lane_free_us` if it still holds this claim's value."""
    moved = {"failures": req.failures, "processing_since": req.processing_since,
             **request_values}  # fmt: skip
    params = {"rid": req.id, "uid": req.user_id, "n": number, "now": now,
              "fence_was": fence_was}  # fmt: skip
    try:
        if one_statement(conn):
            return bool(RECORD_DIRECT.rows(conn, {**params, **moved, **attempt_values}))
        conn.execute(FENCE_SETTLE, {**params, **attempt_values})
        if conn.execute(MOVE, {**params, **moved}).rowcount != 1:
            conn.commit()  # the fence still learns when the call left
            return False
        conn.execute(COMPLETE_ATTEMPT, {**params, **attempt_values})
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return True
