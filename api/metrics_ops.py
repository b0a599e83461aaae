"""Operations series for dashboards and alerts (deploy/grafana, deploy/prometheus), from SQL
and the scheduler's Redis heartbeat at scrape time, beside api/metrics.py's.

- `spdist_min_interval_seconds`: the spacing the pacer keeps between two calls of a user.
- `spdist_reconcile_last_run_timestamp_seconds`: when the scheduler's last pass ran.
- `spdist_lane_slots_15m`: the calls one lane may make in 15 minutes, against which
  `spdist_lane_calls_15m{user_id}` is read.

The per-lane series for operations (`spdist_lane_ready`, `spdist_lane_stalled_seconds`,
`spdist_lane_calls_15m`) are api/metrics_lanes.py's, read with the lane depths.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import RedisError

from worker.context import Context
from worker.errors import PacerUnavailable
from worker.pacer import US, keys

log = logging.getLogger(__name__)
WINDOW = timedelta(minutes=15)


class OpsCollector(Collector):
    """The series above but the per-lane ones (api/metrics_lanes.py): one Redis GET."""

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


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _last_reconcile(ctx: Context) -> float | None:
    try:
        raw = ctx.pacer.redis.get(keys.reconcile_last())
    except (RedisError, PacerUnavailable) as exc:
        log.info("reconcile heartbeat not read: %s", type(exc).__name__)
        return None
    return int(raw) / US if raw else None
