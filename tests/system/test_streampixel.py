"""Streampixel misbehaving: hanging, resetting, garbage, HTML, and 429s our pacer did not cause."""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.conftest import backlog_plan, check

pytestmark = pytest.mark.system

FAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "hang past the timeout": ({"action": "hang", "seconds": 4}, "timeout"),
    "connection reset": ({"action": "reset"}, "network_error"),
    "garbage body": ({"action": "garbage"}, "server_error"),
    "HTML error page": ({"action": "html", "status": 502}, "server_error"),
    "429 our pacer allowed": ({"action": "ratelimit"}, "rate_limited"),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_streampixel_fault(system_factory: Any, name: str) -> None:
    action, outcome = FAULTS[name]
    s = system_factory()
    made = backlog_plan(4)
    hit = [made[1][1], made[4][1], made[8][1]]
    # Scripted before enqueueing: made[1] heads its lane and is dispatched at once.
    s.configure(rules={u: [dict(action)] for u in hit})
    s.backlog(4)
    books = s.settle(60)
    check(s, f"Streampixel: {name}", books)
    assert books.states == {"succeeded": books.requests}
    attempts = s.attempts()
    assert sum(1 for a in attempts if a.outcome == outcome) == len(hit)
    if outcome == "rate_limited":  # a 429 uses up no attempt
        assert all(r.failures == 0 for r in s.requests())
