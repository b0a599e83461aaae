"""The books of a system test: SQL's requests and attempts against the fake's calls.

Counted as queue torture tests count: lost (a request that never ended), duplicated (a call
with no attempt row of its own, i.e. a second call for one attempt; or a second `triggered`
answer read for one request), inside_interval (a call the
fake saw less than the interval after the user's previous one), unknown (attempts whose
outcome was never read: the call may or may not have happened).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from worker.models import TERMINAL


@dataclass
class Books:
    """One scenario's counts."""

    requests: int = 0
    calls: int = 0
    attempts: int = 0
    lost: int = 0
    duplicated: int = 0
    inside_interval: int = 0
    unknown: int = 0
    unmatched: int = 0  # attempts with a read outcome but no call at the fake
    open_attempts: int = 0  # attempt rows never completed
    worker_restarts: int = 0  # workers that exited and were restarted by the supervisor
    states: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def count(requests: list[Any], attempts: list[Any], calls: list[dict[str, Any]]) -> Books:
    """Match attempt rows to calls one for one, by (user, upload)."""
    upload_of = {r.id: (r.user_id, r.upload_id) for r in requests}
    seen = Counter((c["userId"], c["uploadId"]) for c in calls)
    rows = Counter(upload_of[a.request_id] for a in attempts)
    read = Counter(upload_of[a.request_id] for a in attempts if a.outcome not in (None, "unknown"))
    b = Books(requests=len(requests), calls=len(calls), attempts=len(attempts))
    b.lost = sum(1 for r in requests if r.state not in TERMINAL)
    # A call with no attempt row of its own, or a request distributed twice by reads we made.
    triggered = Counter(a.request_id for a in attempts if a.outcome == "triggered")
    b.duplicated = sum(max(0, n - rows[k]) for k, n in seen.items())
    b.duplicated += sum(n - 1 for n in triggered.values() if n > 1)
    b.unmatched = sum(max(0, n - seen[k]) for k, n in read.items())
    b.inside_interval = sum(1 for c in calls if c["violation"])
    b.unknown = sum(1 for a in attempts if a.outcome == "unknown")
    b.open_attempts = sum(1 for a in attempts if a.outcome is None)
    b.states = dict(Counter(str(r.state) for r in requests))
    return b
