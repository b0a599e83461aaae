"""Read models shared by the CLI and the HTTP API: distributions and lanes as JSON-ready dicts."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, tuple_
from sqlalchemy.orm import Session

from worker import lane_views, ledger
from worker.context import Context
from worker.errors import PacerUnavailable, ValidationError
from worker.models import WAITING, DistributionAttempt, DistributionRequest, State, utcnow
from worker.outcomes import from_us
from worker.pacer import Placed
from worker.validation import REQUEST_ID

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaneItem:
    """A waiting request, its place in its lane (1 goes next) and its estimated dispatch."""

    request: DistributionRequest
    position: int
    estimated_at: datetime


@dataclass(frozen=True)
class Lane:
    """A user's lane: when its next slot opens, and who waits in it."""

    user_id: str
    next_slot_at: datetime
    items: list[LaneItem]

    def as_dict(self) -> dict[str, Any]:
        """The `GET /v1/users/{userId}/lane` body."""
        return {
            "userId": self.user_id,
            "nextSlotAt": iso(self.next_slot_at),
            "items": [
                {
                    "id": i.request.id,
                    "projectId": i.request.project_id,
                    "uploadId": i.request.upload_id,
                    "priority": i.request.priority,
                    "state": i.request.state,
                    "position": i.position,
                    "estimatedDispatchAt": iso(i.estimated_at),
                }
                for i in self.items
            ],
        }


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def next_slot_at(ctx: Context, session: Session, user_id: str) -> datetime:
    """When the lane's next call may start: the pacer's state, else the SQL floor."""
    now = utcnow()
    try:
        state = ctx.pacer.state(user_id)
        if state.get("next_free"):
            return max(now, from_us(int(state["next_free"])))
    except PacerUnavailable as exc:
        log.info("lane view without Redis: %s", exc)
    floor = session.scalar(ledger.FLOOR, {"uid": user_id})
    return max(now, from_us(int(floor))) if floor else now


def lane(ctx: Context, session: Session, user_id: str) -> Lane:
    """The lane as SQL records it, timed by the pacer; estimates assume every call succeeds."""
    rows = session.scalars(
        select(DistributionRequest)
        .where(DistributionRequest.user_id == user_id, DistributionRequest.state.in_(WAITING))
        .order_by(DistributionRequest.priority.desc(), DistributionRequest.seq)
    ).all()
    return _timed(ctx, user_id, list(rows), next_slot_at(ctx, session, user_id))


def _timed(ctx: Context, user_id: str, rows: list[DistributionRequest], start: datetime) -> Lane:
    """A lane of `rows` (in lane order) whose next slot opens at `start`."""
    gap = timedelta(seconds=ctx.settings.min_interval_s + ctx.settings.guard_s)
    ready: list[DistributionRequest] = []
    later: list[DistributionRequest] = []
    for r in rows:  # one pass: `r not in ready` made a long lane quadratic
        (ready if r.next_attempt_at is None or r.next_attempt_at <= start else later).append(r)
    later.sort(key=lambda r: r.next_attempt_at or start)
    items, t = [], start
    for pos, req in enumerate([*ready, *later], start=1):
        t = max(t, req.next_attempt_at or t)
        items.append(LaneItem(req, pos, t))
        t += gap
    return Lane(user_id, start, items)


def lanes(ctx: Context, session: Session) -> list[Lane]:
    """Every lane with waiting requests: one SQL read of the waiting rows (never the
    history), and every next slot in one batch (worker/lane_views.py)."""
    rows = session.scalars(
        select(DistributionRequest)
        .where(DistributionRequest.state.in_(WAITING))
        .order_by(
            DistributionRequest.user_id,
            DistributionRequest.priority.desc(),
            DistributionRequest.seq,
        )
    ).all()
    by_user: dict[str, list[DistributionRequest]] = {}
    for req in rows:
        by_user.setdefault(req.user_id, []).append(req)
    starts = lane_views.next_slots(ctx, session, list(by_user))
    return [_timed(ctx, u, reqs, starts[u]) for u, reqs in by_user.items()]


def attempt_dict(a: DistributionAttempt) -> dict[str, Any]:
    """One attempt, camelCase."""
    return {
        "number": a.number,
        "startedAt": iso(a.started_at),
        "finishedAt": iso(a.finished_at),
        "httpStatus": a.http_status,
        "outcome": a.outcome,
        "message": a.message,
        "worker": a.worker,
    }


def distribution_dict(
    req: DistributionRequest, item: LaneItem | None = None, *, attempts: bool = True
) -> dict[str, Any]:
    """The Distribution object (README, HTTP API; fields in worker/contract.py)."""
    out: dict[str, Any] = {
        "id": req.id,
        "userId": req.user_id,
        "projectId": req.project_id,
        "uploadId": req.upload_id,
        "priority": req.priority,
        "createdBy": req.created_by,
        "state": req.state,
        "createdAt": iso(req.created_at),
        "updatedAt": iso(req.updated_at),
        "nextAttemptAt": iso(req.next_attempt_at),
        "position": item.position if item else None,
        "estimatedDispatchAt": iso(item.estimated_at) if item else None,
        "supersededBy": req.superseded_by,
        "message": req.last_message,
    }
    if attempts:
        out["attempts"] = [attempt_dict(a) for a in req.attempts]
    return out


def describe(ctx: Context, session: Session, req: DistributionRequest) -> dict[str, Any]:
    """A distribution with its attempts and, while it waits, its place in the lane."""
    item = None
    if req.state in WAITING:
        item = next(
            (i for i in lane(ctx, session, req.user_id).items if i.request.id == req.id), None
        )
    return distribution_dict(req, item)


def encode_cursor(req: DistributionRequest) -> str:
    """An opaque cursor after `req` in newest-first order."""
    raw = f"{req.created_at.isoformat()}|{req.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of a cursor; ValidationError when it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, request_id = raw.split("|")
        at = datetime.fromisoformat(created)
        # Ours always carry a zone and a request id; anything else would reach SQL as a
        # naive datetime or a NUL, and come back as a driver error.
        if at.tzinfo is None or not REQUEST_ID.fullmatch(request_id):
            raise ValueError("not a cursor of ours")
        return at.astimezone(UTC), request_id
    except (ValueError, OverflowError) as exc:  # binascii and Unicode errors are ValueErrors
        raise ValidationError("cursor is not valid", field="cursor") from exc


def list_distributions(
    session: Session,
    *,
    user_id: str | None = None,
    project_id: str | None = None,
    state: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[DistributionRequest], str | None]:
    """A page of distributions, newest first, and the cursor of the next page."""
    q = select(DistributionRequest)
    if user_id:
        q = q.where(DistributionRequest.user_id == user_id)
    if project_id:
        q = q.where(DistributionRequest.project_id == project_id)
    if state:
        q = q.where(DistributionRequest.state == state)
    if cursor:
        created, request_id = decode_cursor(cursor)
        # A row comparison, which an index on (…, created_at, id) reads as a range; the same
        # condition spelt with OR was a filter, so a deep page walked every newer row first
        # (BENCHMARKS.md, design measurements).
        r = DistributionRequest
        q = q.where(tuple_(r.created_at, r.id) < tuple_(created, request_id))
    q = q.order_by(DistributionRequest.created_at.desc(), DistributionRequest.id.desc())
    rows = list(session.scalars(q.limit(limit + 1)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]) if more and rows else None


def queued_item(ctx: Context, session: Session, req: DistributionRequest) -> LaneItem:
    """A queued request's place in its lane with one COUNT: what `lane()` gives, cheaply."""
    start = next_slot_at(ctx, session, req.user_id)
    r = DistributionRequest
    ahead = (
        session.scalar(
            select(func.count())
            .select_from(r)
            .where(
                r.user_id == req.user_id,
                r.state.in_(WAITING),
                r.id != req.id,
                or_(r.next_attempt_at.is_(None), r.next_attempt_at <= start),
                or_(r.priority > req.priority, and_(r.priority == req.priority, r.seq < req.seq)),
            )
        )
        or 0
    )
    gap = timedelta(seconds=ctx.settings.min_interval_s + ctx.settings.guard_s)
    return LaneItem(req, ahead + 1, start + ahead * gap)


def enqueued_dict(
    ctx: Context, req: DistributionRequest, placed: Placed | None
) -> dict[str, Any] | None:
    """A request just enqueued, placed from what Redis answered: no SQL read.

    None when Redis did not place it (the caller falls back to `describe_one`).
    """
    if placed is None or placed.rank < 0:
        return None
    now = from_us(placed.now_us)
    start = max(now, from_us(placed.next_free_us)) if placed.next_free_us else now
    gap = timedelta(seconds=ctx.settings.min_interval_s + ctx.settings.guard_s)
    item = LaneItem(req, placed.rank + 1, start + placed.rank * gap)
    return {**distribution_dict(req, item, attempts=False), "attempts": []}


def describe_one(ctx: Context, session: Session, req: DistributionRequest) -> dict[str, Any]:
    """`describe()`, with a COUNT instead of the whole lane when the request is queued."""
    if req.state == State.QUEUED and req.next_attempt_at is None:
        return distribution_dict(req, queued_item(ctx, session, req))
    return describe(ctx, session, req)


def places(ctx: Context, session: Session, rows: list[DistributionRequest]) -> dict[str, LaneItem]:
    """The lane place of each waiting request in `rows`: one lane read per user on the page."""
    users = {r.user_id for r in rows if r.state in WAITING}
    found: dict[str, LaneItem] = {}
    for user_id in sorted(users):
        found.update((i.request.id, i) for i in lane(ctx, session, user_id).items)
    return {r.id: found[r.id] for r in rows if r.id in found}


def lane_page(
    ctx: Context, session: Session, user_id: str, *, limit: int, cursor: str | None
) -> dict[str, Any]:
    """`GET /v1/users/{userId}/lane`: `limit` entries after `cursor`, and how many wait."""
    whole = lane(ctx, session, user_id)
    start = decode_lane_cursor(cursor) if cursor else 0
    page = Lane(whole.user_id, whole.next_slot_at, whole.items[start : start + limit])
    more = start + limit < len(whole.items)
    after = encode_lane_cursor(start + limit) if more else None
    return {**page.as_dict(), "waiting": len(whole.items), "nextCursor": after}


def encode_lane_cursor(offset: int) -> str:
    """An opaque cursor: the lane's entries from position `offset + 1` on."""
    return base64.urlsafe_b64encode(f"lane|{offset}".encode()).decode().rstrip("=")


def decode_lane_cursor(cursor: str) -> int:
    """The offset of a lane cursor; ValidationError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, offset = raw.split("|")
        if kind != "lane" or not offset.isdigit() or len(offset) > 9:
            raise ValueError("not a lane cursor")
        return int(offset)
    except ValueError as exc:
        raise ValidationError("cursor is not valid", field="cursor") from exc
