"""/metrics' per-lane series (api/metrics_lanes.py, one statement and one Redis round trip)
against the same figures computed the slow way, lane by lane, on real Redis and databases."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, or_, select

from api.main import create_app
from api.metrics_lanes import read
from tests.integration.test_api import TestClient, close, make_ctx
from tests.integration.test_history import add_request
from worker.context import Context
from worker.models import WAITING, DistributionAttempt, DistributionRequest, PacingFence, utcnow
from worker.pacer import US, keys

pytestmark = pytest.mark.integration
REDIS_LANE, FENCED, FUTURE, DRAINED, HELD_ONLY = (f"{c}" * 24 for c in "12345")
LANE_SERIES = {
    "spdist_lane_depth": "Requests waiting per user.",
    "spdist_next_slot_seconds": "Seconds until the user's next free slot.",
    "spdist_lane_ready": "Requests that may go now.",
    "spdist_lane_stalled_seconds": "Seconds the lane has had work ready and made no call.",
    "spdist_lane_calls_15m": "Calls made in the last 15 minutes by a lane with work ready.",
}


@pytest.fixture
def ctx(db_url: str, redis_url: str) -> Any:
    context = make_ctx(db_url, redis_url, [])
    yield context
    close(context)


def _lanes(ctx: Context) -> None:
    """Waiting, retrying later, drained and held-only lanes, with old and recent calls."""
    now = utcnow()
    for k in range(3):  # three queued; the next slot is Redis's
        add_request(ctx, REDIS_LANE, "queued", at=now - timedelta(minutes=10 + k))
    ctx.pacer.redis.hset(keys.lane_state(REDIS_LANE), "next_free", int((time.time() + 90) * US))
    # a year of calls, two of them recent; one queued, one retrying later; Redis knows nothing:
    # the next slot is the SQL fence
    for days in (300, 200, 100):
        add_request(ctx, FENCED, "confirmed", at=now - timedelta(days=days), attempts=2)
    fence = int((time.time() + 40) * US)
    add_request(ctx, FENCED, "succeeded", at=now - timedelta(minutes=6), attempts=2, free_us=fence)
    # a call 30 minutes ago: recent by its lane_free_us, outside the 15-minute window
    old_free = int((time.time() - 29 * 60) * US)
    add_request(ctx, FENCED, "failed", at=now - timedelta(minutes=30), attempts=1, free_us=old_free)
    add_request(ctx, FENCED, "queued", at=now - timedelta(minutes=20))  # its last call is newer
    later = add_request(ctx, FENCED, "retrying", at=now - timedelta(hours=1), attempts=1)
    _retry_at(ctx, later, now + timedelta(minutes=5))
    # only a request retrying later: depth 1, nothing ready
    waiting = add_request(ctx, FUTURE, "retrying", at=now - timedelta(hours=2), attempts=1)
    _retry_at(ctx, waiting, now + timedelta(minutes=20))
    add_request(ctx, DRAINED, "confirmed", at=now - timedelta(days=2), attempts=1)
    add_request(ctx, HELD_ONLY, "held", at=now - timedelta(minutes=1))


def _retry_at(ctx: Context, rid: str, at: datetime) -> None:
    with ctx.sessions() as s, s.begin():
        s.get_one(DistributionRequest, rid).next_attempt_at = at


def _slow_way(ctx: Context, user: str, now: datetime) -> dict[str, float]:
    """One lane's figures from a full read of its rows, as a person would count them."""
    r, a = DistributionRequest, DistributionAttempt
    with ctx.sessions() as s:
        waiting = s.scalars(select(r).where(r.user_id == user, r.state.in_(WAITING))).all()
        ready = [x for x in waiting if x.next_attempt_at is None or x.next_attempt_at <= now]
        starts = s.scalars(select(a.started_at).where(a.user_id == user)).all()
        fence = s.get(PacingFence, user)
    out: dict[str, float] = {"spdist_lane_depth": len(waiting)}
    free = ctx.pacer.redis.hget(keys.lane_state(user), "next_free")
    slot_us = int(free) if free else (fence.not_before_us if fence else 0)
    out["spdist_next_slot_seconds"] = max(0.0, slot_us / US - now.timestamp())
    if ready:
        since = min(x.next_attempt_at or x.created_at for x in ready)
        quiet = max([since, *starts])
        out["spdist_lane_ready"] = len(ready)
        out["spdist_lane_stalled_seconds"] = max(0.0, (now - quiet).total_seconds())
        out["spdist_lane_calls_15m"] = sum(t >= now - timedelta(minutes=15) for t in starts)
    return out


def _scrape(ctx: Context) -> tuple[str, datetime, datetime]:
    with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
        before = utcnow()
        text = c.get("/metrics").text
        after = utcnow()
    return text, before, after


def _samples(text: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in LANE_SERIES:
            assert family.type == "gauge" and family.documentation == LANE_SERIES[family.name]
            out[family.name] = {s.labels["user_id"]: s.value for s in family.samples}
    return out


def test_lane_series_agree_with_the_slow_way(ctx: Context) -> None:
    _lanes(ctx)
    text, before, after = _scrape(ctx)
    got = _samples(text)
    assert set(got) == set(LANE_SERIES)
    lanes = {REDIS_LANE, FENCED, FUTURE}
    assert set(got["spdist_lane_depth"]) == set(got["spdist_next_slot_seconds"]) == lanes
    assert set(got["spdist_lane_ready"]) == {REDIS_LANE, FENCED}  # FUTURE has nothing ready
    for user in lanes:
        early, late = _slow_way(ctx, user, before), _slow_way(ctx, user, after)
        mine = {name: got[name][user] for name in LANE_SERIES if user in got[name]}
        assert set(mine) == set(early)
        for name, value in mine.items():  # time-dependent ones lie between the two instants
            low, high = sorted((early[name], late[name]))
            assert low - 1e-3 <= value <= high + 1e-3, (user, name, value, early[name])
    assert got["spdist_lane_depth"] == {REDIS_LANE: 3, FENCED: 2, FUTURE: 1}
    assert got["spdist_lane_calls_15m"] == {REDIS_LANE: 0, FENCED: 2}
    assert got["spdist_lane_ready"] == {REDIS_LANE: 3, FENCED: 1}
    assert got["spdist_next_slot_seconds"][FUTURE] == 0  # no fence, no Redis state: now


def test_one_lane_per_label_deepest_first_and_bounded(ctx: Context) -> None:
    _lanes(ctx)
    with ctx.sessions() as s:
        rows = read(ctx, s, utcnow())
    assert [r.user_id for r in rows] == [REDIS_LANE, FENCED, FUTURE]
    with ctx.sessions() as s:
        n = s.scalar(
            select(func.count(func.distinct(DistributionRequest.user_id))).where(
                or_(*(DistributionRequest.state == st for st in WAITING))
            )
        )
    assert n == len(rows)


def test_no_lanes_still_names_the_series(ctx: Context) -> None:
    text, _, _ = _scrape(ctx)
    for name in LANE_SERIES:
        assert f"# TYPE {name} gauge\n" in text
    assert _samples(text) == dict.fromkeys(LANE_SERIES, {})
