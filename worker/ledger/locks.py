"""In-process locks of the ledger: one per user, around a count-then-insert."""

from __future__ import annotations

import threading
from collections import defaultdict

_LOCKS: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def lane_lock(user_id: str) -> threading.Lock:
    """This process's lock on a user's count-then-insert (PostgreSQL autocommits each
    statement, so two threads could both count one under the cap). SQLite's write
    transaction serializes them already; across API processes the cap is a soft one."""
    return _LOCKS[user_id]
