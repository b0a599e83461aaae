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
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)
CONSUMER = "worker.consumer:Consumer"
EVENT_FLUSH_S = 0.02


class Consumer(CeleryConsumer):
    _flush_scheduled = False

    def on_send_event_buffered(self) -> None:
        if self.hub is None or self._flush_scheduled:
            return
        self._flush_scheduled = True
        self.hub.call_later(EVENT_FLUSH_S, self._flush_batch)

    def _flush_batch(self) -> None:
        self._flush_scheduled = False
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
