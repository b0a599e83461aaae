"""Callbacks survive the processes that make them: the worker SIGKILLed right after the
change of state, with no scheduler running yet; the callback still arrives once one runs."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.system.conftest import USERS
from worker import distributions
from worker.dev.callback_receiver import Receiver
from worker.dev.procs import wait_for
from worker.models import State

pytestmark = pytest.mark.system
SECRET = "system-callback-secret"


def test_callback_arrives_after_the_worker_is_killed(system_factory: Any) -> None:
    with Receiver(SECRET) as receiver:
        s = system_factory(workers=1, SPDIST_CALLBACK_HOSTS=receiver.host,
                           SPDIST_CALLBACK_SECRET=SECRET)  # fmt: skip
        for beat in s.beats:  # no deliverer while the change of state is made
            beat.send(signal.SIGKILL)
            wait_for(lambda b=beat: b.popen.poll() is not None, 10, "the scheduler gone")
        new = distributions.NewDistribution(USERS[0], "e" * 24, "f" * 24,
                                            callback_url=receiver.url)  # fmt: skip
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
