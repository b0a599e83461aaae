"""Operations series for dashboards and alerts (deploy/grafana, deploy/prometheus), from SQL
and the scheduler's Redis heartbeat at scrape time, beside api/metrics.py's.

- `spdist_min_interval_seconds`: the spacing the pacer keeps between two calls of a user.
- `spdist_reconcile_last_run_timestamp_seconds`: when the scheduler's last pass ran.
- `spdist_lane_ready{user_id}`: requests that may go now (not retrying later).
- `spdist_lane_stalled_seconds{user_id}`: how long a lane has had work ready and no call.
- `spdist_lane_calls_15m{user_id}` and `spdist_lane_slots_15m`: calls made in the last 15
  minutes against the slots the interval allows in that time (lanes with waiting work).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import RedisError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from worker.context import Context
from worker.errors import PacerUnavailable
from worker.models import WAITING, DistributionAttempt, DistributionRequest, utcnow
from worker.pacer import US, keys

log = logging.getLogger(__name__)
WINDOW = timedelta(minutes=15)
MAX_USERS = 1000


class OpsCollector(Collector):
    """The series above; each scrape runs three grouped queries and one Redis GET."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        gap = self.ctx.settings.min_interval_s + self.ctx.settings.guard_s
        yield _gauge("spdist_min_interval_seconds", "Spacing between two calls of a user.", gap)
        last = _last_reconcile(self.ctx)
        if last is not None:
            yield _gauge(
                "spdist_reconcile_last_run_timestamp_seconds",
                "When the scheduler's last reconcile pass ran (Unix time).",
                last,
            )
        yield _gauge(
            "spdist_lane_slots_15m",
            "Calls one lane may make in 15 minutes.",
            WINDOW.total_seconds() / gap,
        )
        with self.ctx.sessions() as session:
            yield from _lanes(session, utcnow())


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _last_reconcile(ctx: Context) -> float | None:
    try:
        raw = ctx.pacer.redis.get(keys.reconcile_last())
    except (RedisError, PacerUnavailable) as exc:
        log.info("reconcile heartbeat not read: %s", type(exc).__name__)
        return None
    return int(raw) / US if raw else None


def _ready(now: datetime) -> Any:
    r = DistributionRequest
    return r.state.in_(WAITING), or_(r.next_attempt_at.is_(None), r.next_attempt_at <= now)


def _lanes(session: Session, now: datetime) -> Iterator[GaugeMetricFamily]:
    r, a = DistributionRequest, DistributionAttempt
    since = func.min(func.coalesce(r.next_attempt_at, r.created_at))
    ready = session.execute(
        select(r.user_id, func.count(), since)
        .where(*_ready(now))
        .group_by(r.user_id)
        .order_by(func.count().desc())
        .limit(MAX_USERS)
    ).all()
    users = [u for u, _, _ in ready]
    last = (
        dict(
            session.execute(
                select(a.user_id, func.max(a.started_at))
                .where(a.user_id.in_(users))
                .group_by(a.user_id)
            ).all()
        )
        if users
        else {}
    )
    calls = (
        dict(
            session.execute(
                select(a.user_id, func.count())
                .where(a.user_id.in_(users), a.started_at >= now - WINDOW)
                .group_by(a.user_id)
            ).all()
        )
        if users
        else {}
    )
    families = {
        "ready": GaugeMetricFamily(
            "spdist_lane_ready", "Requests that may go now.", labels=["user_id"]
        ),
        "stalled": GaugeMetricFamily(
            "spdist_lane_stalled_seconds",
            "Seconds the lane has had work ready and made no call.",
            labels=["user_id"],
        ),
        "calls": GaugeMetricFamily(
            "spdist_lane_calls_15m",
            "Calls made in the last 15 minutes by a lane with work ready.",
            labels=["user_id"],
        ),
    }
    for user_id, n, ready_since in ready:
        quiet_since = max(filter(None, (ready_since, last.get(user_id))))
        families["ready"].add_metric([user_id], n)
        families["stalled"].add_metric([user_id], max(0.0, (now - quiet_since).total_seconds()))
        families["calls"].add_metric([user_id], calls.get(user_id, 0))
    yield from families.values()
