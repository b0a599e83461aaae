"""Callbacks survive the processes that make them (the worker SIGKILLed right after the
change of state, with no scheduler running yet: the callback still arrives once one runs),
and a receiver that never answers leaves the pacing alone."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.system.conftest import USERS, backlog_plan, check
from worker import distributions
from worker.dev.callback_receiver import Receiver, Script
from worker.dev.procs import wait_for
from worker.models import CallbackDelivery, State

pytestmark = pytest.mark.system
SECRET = "system-callback-secret"


def test_callback_arrives_after_the_worker_is_killed(system_factory: Any) -> None:
    with Receiver(SECRET) as receiver:
        s = system_factory(
            workers=1, SPDIST_CALLBACK_HOSTS=receiver.host, SPDIST_CALLBACK_SECRET=SECRET
        )
        for beat in s.beats:  # no deliverer while the change of state is made
            beat.send(signal.SIGKILL)
            beat.popen.wait(10)
        new = distributions.NewDistribution(USERS[0], "e" * 24, "f" * 24, callback_url=receiver.url)
        rid = distributions.enqueue(s.ctx, new).id
        state = lambda: next(r.state for r in s.requests() if r.id == rid)  # noqa: E731
        wait_for(lambda: state() == State.SUCCEEDED, 60, "the call answered and recorded")
        s.workers[0].send(signal.SIGKILL)  # the worker that made the change is gone
        assert receiver.received == []
        s.beats.append(s.spawn_beat("beat-again"))
        wait_for(lambda: receiver.received, 60, "the callback")
        got = receiver.received[0]
        assert got.verified and got.event == "distribution.succeeded"
        assert got.distribution["id"] == rid and got.delivery == f"{rid}:1"
        log = "".join(p.log() for p in s.procs)
        assert SECRET not in log


def test_receiver_that_never_answers_leaves_pacing_alone(system_factory: Any) -> None:
    """Every request has a callback to a receiver that never answers in time: the calls
    still go at the interval, none lost or inside it, while the tries time out and are
    spaced by the backoff."""
    with Receiver(SECRET, Script(hang_s=20.0)) as hung:
        s = system_factory(
            SPDIST_CALLBACK_HOSTS=hung.host,
            SPDIST_CALLBACK_SECRET=SECRET,
            SPDIST_CALLBACK_TIMEOUT_S="1",
            SPDIST_CALLBACK_BACKOFF_BASE_S="0.5",
        )
        for user, upload in backlog_plan(3):
            new = distributions.NewDistribution(
                user, "a" * 24, upload, coalesce=False, callback_url=hung.url
            )
            distributions.enqueue(s.ctx, new)
        books = s.settle(90)
        check(s, "callback receiver never answers", books)
        assert books.states == {"succeeded": books.requests}
        wait_for(lambda: timed_out(s) >= 2, 60, "callback tries timing out")
        with Session(s.engine) as session:
            rows = session.scalars(select(CallbackDelivery).order_by(CallbackDelivery.id)).all()
        for row in rows:
            later = [
                r
                for r in rows
                if (r.request_id, r.event_no) == (row.request_id, row.event_no)
                and r.try_no == row.try_no + 1
            ]
            if later and row.finished_at is not None:
                assert later[0].due_at > row.finished_at  # spaced by the backoff


def timed_out(s: Any) -> int:
    with Session(s.engine) as session:
        q = select(func.count()).where(CallbackDelivery.error == "ReadTimeout")
        return int(session.scalar(q.select_from(CallbackDelivery)) or 0)
