"""The counts behind /metrics, kept by triggers in SQL (migration 0006), and their upkeep.

`metric_totals` holds one row per (series, label): `requests`/state, `attempts`/outcome
(`in_flight` while a call is unanswered), `delay`/bucket (a first call's start minus its
request's creation; `total` sums the seconds). On PostgreSQL the triggers append to
`metric_deltas` instead; `compact` folds those into the totals, and `read` adds up both,
so a count is exact whether or not the deltas have been folded yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from worker.ledger import Ledger

COMPACT_BATCH = 20_000

READ = text("""
SELECT series, label, sum(n), sum(total) FROM (
    SELECT series, label, n, total FROM metric_totals
    UNION ALL SELECT series, label, n, total FROM metric_deltas) AS both_kinds
GROUP BY series, label
""")


@dataclass(frozen=True)
class Tally:
    """A count and, for the histogram, the sum of its seconds."""

    n: int
    total: float


def compact(ledger: Ledger, conn: Connection, batch: int = COMPACT_BATCH) -> int:
    """Fold up to `batch` deltas into the totals (PostgreSQL; elsewhere there are none);
    how many it folded. The caller commits."""
    return ledger.compact_tallies(conn, batch)


def compact_all(ledger: Ledger, conn: Connection, max_batches: int = 50) -> int:
    """`compact` batch after batch, each committed, until the deltas are folded."""
    folded = 0
    for _ in range(max_batches):
        n = compact(ledger, conn)
        conn.commit()
        folded += n
        if n < COMPACT_BATCH:
            break
    return folded


def read(conn: Connection) -> dict[tuple[str, str], Tally]:
    """Every (series, label) with its count, deltas included."""
    rows = conn.execute(READ).all()
    return {(s, label): Tally(int(n), float(total)) for s, label, n, total in rows}
