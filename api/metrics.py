"""Prometheus metrics computed from SQL at scrape time, so every API process agrees.

A custom collector runs a few GROUP BY queries per scrape instead of counting in this
process: requests are enqueued by many API processes and dispatched by workers this
process never hears from, and SQL already holds every number.

The enqueue-to-dispatch histogram is cumulative over all requests ever dispatched:
for each request, its first attempt's start minus its creation (one aggregate query
over the first attempts; bucket counts are SUM(CASE …) in SQL).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from worker import views
from worker.context import Context
from worker.models import WAITING, DistributionAttempt, DistributionRequest, State, utcnow

log = logging.getLogger(__name__)
BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)
MAX_USERS = 1000  # per-user series beyond this many lanes are left out


def registry_for(ctx: Context) -> CollectorRegistry:
    """A registry holding only spdist's collector (no process metrics of this one API)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SqlCollector(ctx))
    return registry


class SqlCollector(Collector):
    """Requests by state, attempts by outcome, delay histogram, lane depth, next slot."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        with self.ctx.sessions() as session:
            yield _requests_by_state(session)
            yield _attempts_by_outcome(session)
            yield _delay_histogram(session)
            yield from _lanes(self.ctx, session)


def _requests_by_state(session: Session) -> GaugeMetricFamily:
    g = GaugeMetricFamily("spdist_requests", "Distribution requests by state.", labels=["state"])
    counts = dict(session.execute(
        select(DistributionRequest.state, func.count()).group_by(DistributionRequest.state)
    ).all())  # fmt: skip
    for state in State:
        g.add_metric([state.value], counts.get(state.value, 0))
    return g


def _attempts_by_outcome(session: Session) -> CounterMetricFamily:
    c = CounterMetricFamily(
        "spdist_attempts", "Calls made to Streampixel, by outcome.", labels=["outcome"]
    )
    rows = session.execute(
        select(DistributionAttempt.outcome, func.count()).group_by(DistributionAttempt.outcome)
    ).all()
    for outcome, n in rows:
        c.add_metric([outcome or "in_flight"], n)
    return c


def _seconds(session: Session, later: Any, earlier: Any) -> Any:
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later - earlier)


def _delay_histogram(session: Session) -> HistogramMetricFamily:
    delay = _seconds(session, DistributionAttempt.started_at, DistributionRequest.created_at)
    cols = [func.coalesce(func.sum(case((delay <= b, 1), else_=0)), 0) for b in BUCKETS]
    row = session.execute(
        select(*cols, func.count(), func.coalesce(func.sum(delay), 0.0))
        .select_from(DistributionAttempt)
        .join(DistributionRequest, DistributionRequest.id == DistributionAttempt.request_id)
        .where(DistributionAttempt.number == 1)
    ).one()
    buckets = [(_le(b), int(n)) for b, n in zip(BUCKETS, row[: len(BUCKETS)], strict=True)]
    buckets.append(("+Inf", int(row[-2])))
    return HistogramMetricFamily(
        "spdist_enqueue_to_dispatch_seconds",
        "From a request's creation to its first call (SQL, all requests ever dispatched).",
        buckets=buckets,
        sum_value=float(row[-1]),
    )


def _le(bound: float) -> str:
    return f"{bound:g}" if bound < 1e6 else str(bound)


def _lanes(ctx: Context, session: Session) -> Iterator[GaugeMetricFamily]:
    depth = GaugeMetricFamily("spdist_lane_depth", "Requests waiting per user.", labels=["user_id"])
    wait = GaugeMetricFamily(
        "spdist_next_slot_seconds", "Seconds until the user's next free slot.", labels=["user_id"]
    )
    rows = session.execute(
        select(DistributionRequest.user_id, func.count())
        .where(DistributionRequest.state.in_(WAITING))
        .group_by(DistributionRequest.user_id)
        .order_by(func.count().desc())
        .limit(MAX_USERS)
    ).all()
    now = utcnow()
    for user_id, n in rows:
        depth.add_metric([user_id], n)
        slot = views.next_slot_at(ctx, session, user_id)
        wait.add_metric([user_id], max(0.0, (slot - now).total_seconds()))
    yield depth
    yield wait
