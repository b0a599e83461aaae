"""Celery's ETA timer on the Redis clock, so a worker whose own clock is off runs on time.

Dispatch messages carry an ETA on the pacer's clock (Redis TIME). Celery's worker turns an
ETA into a timer entry with its *own* wall clock: a worker 5 minutes behind would hold every
message 5 minutes, one ahead would run them all at once. `strategy` is Celery's default task
strategy with that conversion shifted by the measured offset between Redis's clock and this
host's, re-measured every OFFSET_TTL_S (one TIME command, in the worker's main process).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import redis
from celery.worker.strategy import default
from kombu.asynchronous.timer import to_timestamp

log = logging.getLogger(__name__)
OFFSET_TTL_S = 30.0
SKEW_WARN_S = 1.0


class RedisClockOffset:
    """Seconds to add to this host's wall clock to read Redis's; cached, fails soft."""

    def __init__(self, client: Callable[[], redis.Redis], ttl_s: float = OFFSET_TTL_S) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._offset = 0.0
        self._measured_at: float | None = None

    def __call__(self) -> float:
        now = time.monotonic()
        if self._measured_at is None or now - self._measured_at >= self._ttl_s:
            self._measured_at = now
            try:
                self._offset = self.measure()
            except redis.RedisError as exc:  # keep the last offset; the pacer still guards
                log.warning("clock offset to Redis not measured: %s", exc)
        return self._offset

    def measure(self) -> float:
        before = time.time()
        seconds, micros = self._client().time()
        after = time.time()
        offset = seconds + micros / 1e6 - (before + after) / 2
        if abs(offset) >= SKEW_WARN_S and abs(offset - self._offset) >= SKEW_WARN_S:
            log.warning("this host's clock is %+.1f s off Redis's; ETAs follow Redis", -offset)
        return offset


@lru_cache
def _spdist_redis() -> redis.Redis:
    from worker.context import make_redis
    from worker.settings import get_settings

    settings = get_settings()
    return make_redis(settings.redis_url, settings.redis_master_name)


offset = RedisClockOffset(_spdist_redis)


def redis_to_timestamp(eta: datetime | float, default_timezone: Any = UTC) -> float:
    """kombu's `to_timestamp` (a datetime to this host's timer clock), read on Redis's clock."""
    if not isinstance(eta, datetime):
        return eta
    return max(to_timestamp(eta, default_timezone) - offset(), 0.0)


def strategy(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Callable[..., Any]:
    """Celery's default strategy, with ETAs converted on the Redis clock."""
    handler = default(task, app, consumer, **kwargs)

    def on_message(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any) -> Any:
        return handler(message, body, ack, reject, callbacks, to_timestamp=redis_to_timestamp)

    return on_message
