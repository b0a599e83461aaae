"""One reconcile pass per period, however many reconcile messages arrive."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import cast

import fakeredis
import redis

from worker.context import Context
from worker.tasks import _take_turn


def ctx(r: object, every_s: float = 0.1) -> Context:
    settings = SimpleNamespace(reconcile_every_s=every_s)
    ns = SimpleNamespace(settings=settings, pacer=SimpleNamespace(redis=r), worker_name="w:1")
    return cast(Context, ns)


def test_second_message_in_the_same_period_skips() -> None:
    c = ctx(fakeredis.FakeRedis())
    assert _take_turn(c) is True
    assert _take_turn(c) is False  # a second beat's message, or a backlog
    time.sleep(0.1)  # the turn lasts 80 % of the period
    assert _take_turn(c) is True


def test_redis_down_lets_the_pass_run_and_report_it() -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.1)
    assert _take_turn(ctx(dead)) is True


def test_beat_expiry_tolerates_clock_drift_between_hosts() -> None:
    from worker.celery_app import celery_config

    options = celery_config()["beat_schedule"]["reconcile"]["options"]
    assert options["expires"] >= 60
