"""What Flower shows of a dispatch: its real outcome, and arguments a person can read.

SQL decides what happens after a call (worker/outcomes.py) and the lane sends the next
attempt; Celery never retries a dispatch for a failed call. But a task that returns shows as
SUCCESS, so a dispatch whose call failed ends by raising, after SQL has recorded everything:
`celery.exceptions.Retry` (no new message is sent: only `Task.retry()` sends one) when the
request will be tried again, `CallFailed` when it is over. Either way the message is acked as
on success, and Flower lists the task as RETRY or FAILURE with Streampixel's reason and the
time of the next attempt.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import Retry
from sqlalchemy.exc import SQLAlchemyError

from worker.context import Context
from worker.errors import Outcome
from worker.models import DistributionRequest, State
from worker.outcomes import from_us
from worker.views import iso

log = logging.getLogger(__name__)
# What the dispatch returns when a call (or a call refused before it was made) did not
# trigger a distribution.
FAILED_WORDS = frozenset(o.value for o in Outcome if o is not Outcome.TRIGGERED) | {
    "no-key",
    "build-rejected",
}


class CallFailed(Exception):
    """The call did not trigger a distribution; SQL has recorded why and what comes next."""


def report(ctx: Context, request_id: str, word: str) -> str:
    """`word` when the call went well (or none was made); raise for Flower when it failed."""
    if word not in FAILED_WORDS:
        return word
    try:
        with ctx.sessions() as session:
            req = session.get(DistributionRequest, request_id)
            state, message, next_at = (
                (req.state, req.last_message, req.next_attempt_at) if req else ("", None, None)
            )
    except SQLAlchemyError as exc:  # Flower then shows less; the dispatch itself is done
        log.info("outcome of %s not read for Flower: %s", request_id, type(exc).__name__)
        return word
    reason = f"{word}: {message or 'no message'} (request {state or 'gone'})"
    if state in (State.RETRYING, State.QUEUED):
        when = f"next attempt {iso(next_at)}" if next_at else "back in its lane"
        raise Retry(f"{reason}; {when}", exc=CallFailed(f"{reason}; {when}"), when=next_at)
    raise CallFailed(reason)


def dispatch_repr(kwargs: dict[str, Any]) -> str:
    """The dispatch's kwargs as Flower shows them: `due_us` as an ISO time."""
    shown = {k: v for k, v in kwargs.items() if k != "due_us"}
    due = kwargs.get("due_us")
    if isinstance(due, int):
        shown["due"] = iso(from_us(due))
    return repr(shown)
