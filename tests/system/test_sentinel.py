"""A real Sentinel failover mid-run: the master SIGKILLed with a call in flight."""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.conftest import USERS, check, wait_call

pytestmark = pytest.mark.system
HANG = [{"action": "hang", "seconds": 2}]  # inside the 3 s timeout: the call is "in flight"


def test_sentinel_failover_mid_run(system_factory: Any) -> None:
    s = system_factory(sentinel=True, SPDIST_TEST_LEASE_S="8")
    made = s.backlog(5)
    upload = made[4][1]
    s.configure(rules={upload: list(HANG)})
    wait_call(s, upload)  # the 5th call has reached the fake and hangs there
    old = s.cluster.kill_master()  # no persistence: only what the replica had survives
    # A worker may exit when its broker goes away with messages unacknowledged (finding 2):
    # its pool children die with it, so a call in flight at the kill (the hung one, or
    # another user's whose slot fell inside the hang) can end `unknown`: the claim's lease
    # expires and it is called again in a later slot. Open attempts bound them.
    in_flight = sum(1 for a in s.attempts() if a.outcome is None)
    assert s.cluster.wait_failover() != old
    # A process that lives through the failover (as the API does: the workers restart)
    # puts new requests straight into their lanes on the new master, not in the outbox.
    for n, user in enumerate(USERS):
        assert placed_at_once(s, user, f"{0xD00000 + n:024x}")
    # Every request ends, so the calls after the failover went through the new master.
    books = s.settle(120)
    check(s, "Sentinel failover, master SIGKILLed mid-run", books, max_unknown=in_flight)
    assert books.states == {"succeeded": books.requests}
    assert books.attempts == books.calls  # every attempt row has its call, and no more


def placed_at_once(s: Any, user: str, upload: str) -> bool:
    """Enqueue from the test's own context; whether the pacer placed it in its lane."""
    from worker import distributions

    project = f"{0xABC000 + USERS.index(user):024x}"
    new = distributions.validate(s.ctx, user, project, upload, 0, coalesce=False)
    return distributions.enqueue_placed(s.ctx, new)[1] is not None
