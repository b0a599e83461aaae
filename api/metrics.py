"""Prometheus metrics read from SQL at scrape time, so every API process agrees.

Requests are enqueued by many API processes and dispatched by workers this process never
hears from, so nothing is counted here: triggers keep the counts in SQL as the rows change
(worker/tallies.py, migration 0006), and a scrape reads a few dozen rows of them, however
long the history. The per-lane series are api/metrics_lanes.py's: one statement and one
Redis round trip for every lane, written as text beside this registry's.

The enqueue-to-dispatch histogram is cumulative over every request whose first call got
an answer: its first attempt's start minus its creation. Pruning history leaves it, and
the attempts counter, as they were.

A series is a function of a `Scrape` in `SERIES`; adding one is adding a function there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from worker import tallies
from worker.context import Context
from worker.models import State

log = logging.getLogger(__name__)
BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)


@dataclass
class Scrape:
    """What one scrape has read: the session, and the SQL tallies."""

    ctx: Context
    session: Session
    counts: dict[tuple[str, str], tallies.Tally]

    def series(self, name: str) -> dict[str, tallies.Tally]:
        """The tallies of one series, by label."""
        return {label: t for (s, label), t in self.counts.items() if s == name}


def registry_for(ctx: Context) -> CollectorRegistry:
    """A registry holding only spdist's collector (no process metrics of this one API)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SqlCollector(ctx))
    return registry


class SqlCollector(Collector):
    """Every function of `SERIES`, on one session."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        with self.ctx.sessions() as session:
            # The deltas stay short even with no scheduler.
            tallies.compact(self.ctx.ledger, session.connection())
            session.commit()
            scrape = Scrape(self.ctx, session, tallies.read(session.connection()))
            for series in SERIES:
                yield from series(scrape)


def requests_by_state(scrape: Scrape) -> Iterable[GaugeMetricFamily]:
    """`spdist_requests{state}`."""
    g = GaugeMetricFamily("spdist_requests", "Distribution requests by state.", labels=["state"])
    counts = scrape.series("requests")
    for state in sorted({*(s.value for s in State), *counts}):
        g.add_metric([state], counts[state].n if state in counts else 0)
    yield g


def attempts_by_outcome(scrape: Scrape) -> Iterable[CounterMetricFamily]:
    """`spdist_attempts_total{outcome}`; `in_flight` for calls not answered yet."""
    c = CounterMetricFamily(
        "spdist_attempts", "Calls made to Streampixel, by outcome.", labels=["outcome"]
    )
    for outcome, tally in sorted(scrape.series("attempts").items()):
        if tally.n:
            c.add_metric([outcome], tally.n)
    yield c


def delay_histogram(scrape: Scrape) -> Iterable[HistogramMetricFamily]:
    """`spdist_enqueue_to_dispatch_seconds`, from the per-bucket tallies."""
    tally = scrape.series("delay")
    buckets, running = [], 0
    for bound in (*(_le(b) for b in BUCKETS), "+Inf"):
        running += tally[bound].n if bound in tally else 0
        buckets.append((bound, running))
    yield HistogramMetricFamily(
        "spdist_enqueue_to_dispatch_seconds",
        "From a request's creation to its first call (SQL, all requests ever dispatched).",
        buckets=buckets,
        sum_value=sum(t.total for t in tally.values()),
    )


def callback_tries(scrape: Scrape) -> Iterable[CounterMetricFamily]:
    """`spdist_callback_tries_total{outcome}`: finished tries of callbacks (delivered,
    failed and tried again, expired: given up after 24 h)."""
    c = CounterMetricFamily(
        "spdist_callback_tries", "Callback tries finished, by outcome.", labels=["outcome"]
    )
    for outcome in ("delivered", "failed", "expired"):
        tally = scrape.series("callbacks").get(outcome)
        c.add_metric([outcome], tally.n if tally else 0)
    yield c


def _le(bound: float) -> str:
    return f"{bound:g}"


SERIES: list[Callable[[Scrape], Iterable[Any]]] = [
    requests_by_state,
    attempts_by_outcome,
    delay_histogram,
    callback_tries,
]
