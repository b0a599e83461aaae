"""Messages that should not exist: duplicates, unknown or deleted ids, malformed ones."""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.conftest import USERS, check

pytestmark = pytest.mark.system


def test_same_message_published_twice(system_factory: Any) -> None:
    s = system_factory()
    made = s.backlog(4)
    for req in s.requests():
        kwargs = {
            "request_id": req.id,
            "user_id": req.user_id,
            "project_id": req.project_id,
            "upload_id": req.upload_id,
        }
        for _ in range(2):  # the very same message (same task id), twice
            s.send("spdist.dispatch", kwargs, task_id=f"dup-{req.id}")
    books = s.settle(60)
    check(s, "same task message published twice", books)
    assert books.states == {"succeeded": len(made)}


def test_message_for_unknown_or_deleted_request(system_factory: Any) -> None:
    s = system_factory()
    s.backlog(4)
    lane0 = [r for r in s.requests() if r.user_id == USERS[0]]
    doomed = sorted(lane0, key=lambda r: r.seq)[2]  # still waiting in its lane
    s.delete_request(doomed.id)
    for rid in (doomed.id, "f" * 32):
        kwargs = {
            "request_id": rid,
            "user_id": USERS[0],
            "project_id": doomed.project_id,
            "upload_id": doomed.upload_id,
        }
        s.send("spdist.dispatch", kwargs)
    books = s.settle(60)
    check(s, "message for unknown/deleted request", books)
    assert books.states == {"succeeded": books.requests}
    assert doomed.upload_id not in {c["uploadId"] for c in s.calls()}


def test_malformed_messages(system_factory: Any) -> None:
    s = system_factory()
    s.backlog(4)
    s.send("spdist.dispatch", {"nonsense": 1})  # wrong arguments
    s.send("spdist.dispatch", {"request_id": 12345, "due_us": "soon"})  # wrong types
    s.send("spdist.no_such_task", {})  # unknown task
    with s.redis.client() as r:
        # Not even a message envelope: Celery's worker exits on it (the supervisor restarts it).
        r.lpush("spdist", b"\x00 not json at all")
    books = s.settle(60)
    check(s, "malformed messages", books)
    assert books.states == {"succeeded": books.requests}
    assert s.logs().count("malformed dispatch message") == 1  # dropped, not retried forever
