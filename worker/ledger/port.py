"""The ledger port: what the flow asks of the system of record, whatever the database.

`Ledger` is the interface; `postgres.PostgresLedger` and `sqlite.SqliteLedger` implement it
(and `aio.AsyncPostgresLedger` the API's batched insert on asyncio), one chosen by
`worker.ledger.for_engine` where the context is made. The flow code (dispatch, enqueue,
holds, webhooks, the reconciler) calls the port and never asks which database it is on.

Every method takes the connection to run on, so a dispatch runs all its steps on the one
connection it holds; each method commits what it did (or rolls it back and raises).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Connection, Row, Table

from worker.models import State


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


RoomCheck = Callable[[Connection], None]
"""Called with the connection before a new request is stored: raises to refuse it
(back-pressure), with the insert, so two enqueues cannot both take the last place."""


class Ledger(Protocol):
    """The system of record's operations on requests, attempts and the pacing fence."""

    name: str  # the database's: "postgresql" or "sqlite" (logs, and the API's choice of path)

    def load(self, conn: Connection, request_id: str) -> Loaded | None:
        """The request with its lane's floor, or None."""
        ...

    def pending_events(self, conn: Connection, upload_id: str) -> bool:
        """Whether webhook events of this upload wait to be acted on."""
        ...

    def waiting_and_floor(self, conn: Connection, user_id: str) -> tuple[list[Snapshot], int]:
        """The user's waiting requests, and the pacing fence of the lane."""
        ...

    def claim(
        self,
        conn: Connection,
        req: Snapshot,
        now: datetime,
        lease: datetime,
        attempt: dict[str, Any],
    ) -> int | Fenced | None:
        """Move the user's fence and claim the request (to `dispatching`, plus the attempt
        row), committed: the attempt's number; Fenced when the fence stands after the
        granted slot (`attempt["slot_us"]`); None when the request is not claimable."""
        ...

    def restore_fence(self, conn: Connection, req: Snapshot, number: int, fence_was: int) -> None:
        """A claim that moved the fence made no call: give the fence back what the user's
        other attempts left, if it still holds that claim's value."""
        ...

    def unclaim(self, conn: Connection, req: Snapshot, number: int, fence_was: int) -> None:
        """No call was made: drop the attempt row, put the request back, restore the fence."""
        ...

    def record(
        self,
        conn: Connection,
        req: Snapshot,
        number: int,
        now: datetime,
        request_values: dict[str, Any],
        attempt_values: dict[str, Any],
        fence_was: int,
    ) -> bool:
        """Move the request and complete its attempt, fenced by the attempt number; bring
        the user's fence to the attempt's `lane_free_us` if it still holds this claim's
        value. False when the claim was no longer this one's."""
        ...

    def insert(
        self,
        conn: Connection,
        values: dict[str, Any],
        *,
        coalesce: bool,
        check_room: RoomCheck | None = None,
    ) -> Any:
        """Store a new request (taking the seq of the project's oldest queued request it
        supersedes when `coalesce`), committed; the superseded row (id, seq, project_id,
        upload_id) or None."""
        ...

    def supersede(self, conn: Connection, values: dict[str, Any]) -> Any:
        """Mark the project's oldest queued request superseded by the new one `values`
        describes (in the caller's transaction); the row replaced, or None."""
        ...

    def insert_request(self, conn: Connection, values: dict[str, Any]) -> None:
        """Store a new request's row (in the caller's transaction)."""
        ...

    def transition(
        self,
        conn: Any,
        request_id: str,
        from_: Iterable[State] | State,
        to: State,
        *,
        only_if: Iterable[ColumnElement[bool]] = (),
        **values: Any,
    ) -> bool:
        """Move the request to `to` (with `values`) only if it is in one of `from_` and
        meets every `only_if` condition, in the caller's transaction (a Connection or a
        Session): whether it moved. `to` may equal `from_` to change values under the guard."""
        ...

    def take(
        self,
        conn: Connection,
        table: Table,
        where: ColumnElement[bool],
        order_by: Any,
        values: dict[str, Any],
        columns: Iterable[Any],
        limit: int,
    ) -> list[Row[Any]]:
        """Take up to `limit` rows of `table` that meet `where` (first in `order_by`) by
        setting `values` on them, committed: the rows taken, as `columns`. Of two callers
        taking at once, each row goes to one (a queue's claim; the table has an `id`)."""
        ...

    def compact_tallies(self, conn: Connection, batch: int) -> int:
        """Fold up to `batch` of the metric triggers' deltas into their totals (the caller
        commits): how many it folded. A database whose triggers write the totals has none."""
        ...

    def for_large_read(self, conn: Connection) -> None:
        """Set the caller's transaction up for one large read (PostgreSQL: no JIT, whose
        compile time costs a scrape more than the plan saves)."""
        ...
