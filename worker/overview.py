"""What the operator's console shows, as JSON-ready dicts: lanes, held requests, recent calls.

Every list is bounded so that one page load costs a few small queries however busy spdist is.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from worker import views
from worker.context import Context
from worker.models import WAITING, DistributionAttempt, DistributionRequest, utcnow

MAX_LANES = 50
MAX_LANE_ITEMS = 25
MAX_RECENT = 30
MAX_HELD = 50
MAX_TIMELINE = 500
HELD = "held"  # a state that comes with the pipeline issue; shown whenever rows carry it


def overview(ctx: Context, session: Session, *, user: str | None, hours: float) -> dict[str, Any]:
    """The console's whole page of data in one answer."""
    gap = ctx.settings.min_interval_s + ctx.settings.guard_s
    return {
        "now": views.iso(utcnow()),
        "intervalS": gap,
        "lanes": lanes(ctx, session),
        "held": held(session),
        "recent": recent_attempts(session),
        "timeline": timeline(session, user, hours) if user else None,
    }


def lanes(ctx: Context, session: Session) -> list[dict[str, Any]]:
    """The busiest lanes first, each with its first requests in order."""
    r = DistributionRequest
    rows = session.execute(
        select(r.user_id, func.count())
        .where(r.state.in_(WAITING))
        .group_by(r.user_id)
        .order_by(func.count().desc(), r.user_id)
        .limit(MAX_LANES)
    ).all()
    out = []
    for user_id, waiting in rows:
        lane = lane_head(ctx, session, user_id, MAX_LANE_ITEMS).as_dict()
        out.append({**lane, "waiting": waiting})
    return out


def lane_head(ctx: Context, session: Session, user_id: str, limit: int) -> views.Lane:
    """The first `limit` places of `views.lane()`, reading at most 2 × `limit` rows."""
    r = DistributionRequest
    start = views.next_slot_at(ctx, session, user_id)
    mine = (r.user_id == user_id, r.state.in_(WAITING))
    ready = session.scalars(
        select(r)
        .where(*mine, or_(r.next_attempt_at.is_(None), r.next_attempt_at <= start))
        .order_by(r.priority.desc(), r.seq)
        .limit(limit)
    ).all()
    later = session.scalars(
        select(r)
        .where(*mine, r.next_attempt_at > start)
        .order_by(r.next_attempt_at, r.priority.desc(), r.seq)
        .limit(limit)
    ).all()
    gap = timedelta(seconds=ctx.settings.min_interval_s + ctx.settings.guard_s)
    items, t = [], start
    for pos, req in enumerate([*ready, *later][:limit], start=1):
        t = max(t, req.next_attempt_at or t)
        items.append(views.LaneItem(req, pos, t))
        t += gap
    return views.Lane(user_id, start, items)


def held(session: Session) -> list[dict[str, Any]]:
    """Requests waiting for a release, oldest first."""
    rows = session.scalars(
        select(DistributionRequest)
        .where(DistributionRequest.state == HELD)
        .order_by(DistributionRequest.created_at)
        .limit(MAX_HELD)
    ).all()
    return [views.distribution_dict(r, attempts=False) for r in rows]


def _attempt_row(a: DistributionAttempt, req: DistributionRequest) -> dict[str, Any]:
    return {
        **views.attempt_dict(a),
        "requestId": req.id,
        "userId": req.user_id,
        "projectId": req.project_id,
        "uploadId": req.upload_id,
        "state": req.state,
    }


def recent_attempts(session: Session) -> list[dict[str, Any]]:
    """The last calls made, newest first, with outcome and Streampixel's message."""
    rows = session.execute(
        select(DistributionAttempt, DistributionRequest)
        .join(DistributionRequest, DistributionRequest.id == DistributionAttempt.request_id)
        .order_by(DistributionAttempt.started_at.desc(), DistributionAttempt.id.desc())
        .limit(MAX_RECENT)
    ).all()
    return [_attempt_row(a, req) for a, req in rows]


def timeline(session: Session, user: str, hours: float) -> dict[str, Any]:
    """One user's calls over the last `hours`, oldest first."""
    since = utcnow() - timedelta(hours=hours)
    rows = session.execute(
        select(DistributionAttempt, DistributionRequest)
        .join(DistributionRequest, DistributionRequest.id == DistributionAttempt.request_id)
        .where(DistributionAttempt.user_id == user, DistributionAttempt.started_at >= since)
        .order_by(DistributionAttempt.started_at)
        .limit(MAX_TIMELINE)
    ).all()
    return {
        "userId": user,
        "since": views.iso(since),
        "calls": [_attempt_row(a, req) for a, req in rows],
    }
