"""Task events sent in batches: one flush per window, and none left behind at a stop."""

from __future__ import annotations

from typing import Any

import pytest
from celery.worker.consumer import Consumer as CeleryConsumer

from worker import consumer as consumer_mod
from worker.celery_app import app
from worker.consumer import EVENT_FLUSH_S, Consumer


class Hub:
    def __init__(self) -> None:
        self.later: list[tuple[float, Any]] = []

    def call_later(self, delay: float, callback: Any, *args: Any) -> None:
        self.later.append((delay, callback))


class Dispatcher:
    def __init__(self, fail: bool = False) -> None:
        self.flushes, self.fail = 0, fail

    def flush(self) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        self.flushes += 1


def bare(dispatcher: Dispatcher, hub: Hub | None) -> Consumer:
    c = Consumer.__new__(Consumer)  # only what the event path touches
    c.hub, c.event_dispatcher = hub, dispatcher
    return c


def test_events_buffered_together_go_out_in_one_flush() -> None:
    hub, dispatcher = Hub(), Dispatcher()
    c = bare(dispatcher, hub)
    for _ in range(5):  # received, started, succeeded, … within one window
        c.on_send_event_buffered()
    assert [d for d, _ in hub.later] == [EVENT_FLUSH_S] and dispatcher.flushes == 0
    hub.later.pop()[1]()
    assert dispatcher.flushes == 1
    c.on_send_event_buffered()  # the next event opens the next window
    assert len(hub.later) == 1


def test_a_flush_that_never_ran_is_scheduled_again(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(consumer_mod.time, "monotonic", lambda: clock[0])
    hub, dispatcher = Hub(), Dispatcher()
    c = bare(dispatcher, hub)
    c.on_send_event_buffered()
    hub.later.clear()  # its timer entry is gone, as with a reset timer
    clock[0] += EVENT_FLUSH_S / 2
    c.on_send_event_buffered()
    assert hub.later == []  # not overdue yet: it may still run
    clock[0] += 2 * EVENT_FLUSH_S
    c.on_send_event_buffered()
    assert len(hub.later) == 1
    hub.later.pop()[1]()
    assert dispatcher.flushes == 1


def test_a_stop_or_shutdown_flushes_what_is_buffered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CeleryConsumer, "stop", lambda self: None)
    monkeypatch.setattr(CeleryConsumer, "shutdown", lambda self: None)
    dispatcher = Dispatcher()
    c = bare(dispatcher, Hub())
    c.on_send_event_buffered()
    c.stop()
    c.shutdown()
    assert dispatcher.flushes == 2


def test_a_failed_flush_does_not_stop_the_stop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stopped: list[bool] = []
    monkeypatch.setattr(CeleryConsumer, "shutdown", lambda self: stopped.append(True))
    bare(Dispatcher(fail=True), Hub()).shutdown()
    assert stopped == [True] and "task events not sent" in caplog.text


def test_without_an_event_loop_nothing_is_scheduled() -> None:
    dispatcher = Dispatcher()
    bare(dispatcher, None).on_send_event_buffered()
    assert dispatcher.flushes == 0


def test_the_app_uses_it() -> None:
    from celery.utils.imports import symbol_by_name

    assert symbol_by_name(app.conf.worker_consumer) is Consumer
