"""Celery's worker consumer, sending task events for Flower in batches a few ms apart.

Celery buffers task events (received, started, succeeded, …) and flushes the buffer on the
event loop's next turn: with tasks that take a few milliseconds, each flush carries one or
two events, and each is a PUBLISH the worker's main process waits for. Here the first
event buffered schedules a flush EVENT_FLUSH_S later, so one PUBLISH carries every event of
that window (Celery's own limit of 24 per batch still flushes at once). Flower sees a task's
events at most EVENT_FLUSH_S later; the system of record is SQL, never these events.
Buffered events are flushed before the consumer stops, so a warm shutdown sends them all.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)
CONSUMER = "worker.consumer:Consumer"
EVENT_FLUSH_S = 0.02


class Consumer(CeleryConsumer):
    # When the pending flush is due (monotonic seconds), None when none is pending.
    _flush_at: float | None = None

    def on_send_event_buffered(self) -> None:
        if self.hub is None:
            return
        now = time.monotonic()
        # One flush pending covers this event. One overdue by a whole window never ran (its
        # timer entry went with a reconnect, say): schedule another rather than wait forever.
        if self._flush_at is not None and now < self._flush_at + EVENT_FLUSH_S:
            return
        self._flush_at = now + EVENT_FLUSH_S
        self.hub.call_later(EVENT_FLUSH_S, self._flush_batch)

    def _flush_batch(self) -> None:
        self._flush_at = None
        self._flush_events()

    def _flush_before_stopping(self) -> None:
        try:
            self._flush_events()
        except Exception as exc:  # the broker may be the reason we stop
            log.warning("task events not sent before stopping: %s", exc)

    def stop(self) -> Any:
        self._flush_before_stopping()
        return super().stop()

    def shutdown(self) -> Any:
        self._flush_before_stopping()
        return super().shutdown()
