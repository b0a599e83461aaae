"""history: tallies kept by triggers for /metrics, and indexes for lists and retention

`metric_totals` holds every /metrics count (requests by state, attempts by outcome, the
enqueue-to-dispatch histogram); triggers on the two tables keep it, so a scrape reads a
few dozen rows however long the history, and every API process and restart agrees.
On PostgreSQL the triggers are per statement and append to `metric_deltas` (an INSERT
never waits on another's row lock, so concurrent dispatches do not queue on a hot
counter row); `worker.tallies.compact` folds the deltas into the totals. On SQLite (one
writer at a time) row triggers update the totals directly.

A deleted attempt only takes back its `in_flight` count: pruning history never makes a
counter go down.

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUCKETS = ("1", "5", "15", "30", "60", "120", "300", "600", "1800", "3600", "7200", "21600")
INDEXES = {
    "ix_requests_user_created": ("distribution_requests", ["user_id", "created_at", "id"]),
    "ix_requests_project_created": ("distribution_requests", ["project_id", "created_at", "id"]),
    "ix_requests_state_created": ("distribution_requests", ["state", "created_at", "id"]),
    "ix_webhooks_received": ("webhook_events", ["received_at"]),
}


def bucket_of(delay: str) -> str:
    """SQL: the histogram label (`le`) of a delay in seconds."""
    whens = " ".join(f"WHEN {delay} <= {b} THEN '{b}'" for b in BUCKETS)
    return f"CASE {whens} ELSE '+Inf' END"


PG_DELAY = "extract(epoch FROM a.started_at - r.created_at)"
SQLITE_DELAY = "(julianday(NEW.started_at) - julianday(r.created_at)) * 86400.0"

# Statement triggers on PostgreSQL; each function sees only its own transition tables.
PG_FUNCTIONS = {
    "spdist_tally_requests_ins": """
        INSERT INTO metric_deltas (series, label, n, total)
        SELECT 'requests', state, count(*), 0 FROM new_rows GROUP BY state""",
    "spdist_tally_requests_upd": """
        INSERT INTO metric_deltas (series, label, n, total)
        SELECT 'requests', state, sum(d), 0 FROM (
            SELECT state, 1 AS d FROM new_rows UNION ALL SELECT state, -1 FROM old_rows) x
        GROUP BY state HAVING sum(d) <> 0""",
    "spdist_tally_requests_del": """
        INSERT INTO metric_deltas (series, label, n, total)
        SELECT 'requests', state, -count(*), 0 FROM old_rows GROUP BY state""",
    "spdist_tally_attempts_ins": f"""
        INSERT INTO metric_deltas (series, label, n, total)
        SELECT 'attempts', coalesce(outcome, 'in_flight'), count(*), 0 FROM new_rows
        GROUP BY 2;
        INSERT INTO metric_deltas (series, label, n, total)
        SELECT 'delay', {bucket_of(PG_DELAY)}, count(*), sum({PG_DELAY})
        FROM new_rows a JOIN distribution_requests r ON r.id = a.request_id
        WHERE a.number = 1 AND a.outcome IS NOT NULL GROUP BY 2""",
    "spdist_tally_attempts_upd": f"""
        INSERT INTO metric_deltas (series, label, n, total)
        SELECT 'attempts', label, sum(d), 0 FROM (
            SELECT coalesce(n.outcome, 'in_flight') AS label, 1 AS d
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE o.outcome IS DISTINCT FROM n.outcome
            UNION ALL
            SELECT coalesce(o.outcome, 'in_flight'), -1
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE o.outcome IS DISTINCT FROM n.outcome) x
        GROUP BY label HAVING sum(d) <> 0;
        INSERT INTO metric_deltas (series, label, n, total)
        SELECT 'delay', {bucket_of(PG_DELAY)}, count(*), sum({PG_DELAY})
        FROM new_rows a JOIN old_rows o ON o.id = a.id
        JOIN distribution_requests r ON r.id = a.request_id
        WHERE a.number = 1 AND o.outcome IS NULL AND a.outcome IS NOT NULL GROUP BY 2""",
    "spdist_tally_attempts_del": """
        INSERT INTO metric_deltas (series, label, n, total)
        SELECT 'attempts', 'in_flight', -count(*), 0 FROM old_rows WHERE outcome IS NULL
        HAVING count(*) > 0""",
}
PG_TRIGGERS = {  # function: (table, event, transition tables)
    "spdist_tally_requests_ins": ("distribution_requests", "INSERT", "NEW TABLE AS new_rows"),
    "spdist_tally_requests_upd": (
        "distribution_requests",
        "UPDATE",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    ),
    "spdist_tally_requests_del": ("distribution_requests", "DELETE", "OLD TABLE AS old_rows"),
    "spdist_tally_attempts_ins": ("distribution_attempts", "INSERT", "NEW TABLE AS new_rows"),
    "spdist_tally_attempts_upd": (
        "distribution_attempts",
        "UPDATE",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    ),
    "spdist_tally_attempts_del": ("distribution_attempts", "DELETE", "OLD TABLE AS old_rows"),
}


def _add(series: str, label: str, n: str = "1", total: str = "0") -> str:
    return (
        f"INSERT INTO metric_totals (series, label, n, total) "
        f"VALUES ('{series}', {label}, {n}, {total}) ON CONFLICT (series, label) "
        "DO UPDATE SET n = n + excluded.n, total = total + excluded.total;"
    )


_SQLITE_DELAY_ADD = (
    "INSERT INTO metric_totals (series, label, n, total) "
    f"SELECT 'delay', {bucket_of(SQLITE_DELAY)}, 1, {SQLITE_DELAY} "
    "FROM distribution_requests r WHERE r.id = NEW.request_id AND true "
    "ON CONFLICT (series, label) DO UPDATE SET n = n + excluded.n, total = total + excluded.total;"
)
SQLITE_TRIGGERS = {
    "spdist_tally_requests_ins": "AFTER INSERT ON distribution_requests BEGIN "
    + _add("requests", "NEW.state")
    + " END",
    "spdist_tally_requests_upd": "AFTER UPDATE OF state ON distribution_requests "
    "WHEN OLD.state IS NOT NEW.state BEGIN "
    + _add("requests", "OLD.state", "-1")
    + _add("requests", "NEW.state")
    + " END",
    "spdist_tally_requests_del": "AFTER DELETE ON distribution_requests BEGIN "
    + _add("requests", "OLD.state", "-1")
    + " END",
    "spdist_tally_attempts_ins": "AFTER INSERT ON distribution_attempts BEGIN "
    + _add("attempts", "coalesce(NEW.outcome, 'in_flight')")
    + " END",
    "spdist_tally_attempts_ins_delay": "AFTER INSERT ON distribution_attempts "
    "WHEN NEW.number = 1 AND NEW.outcome IS NOT NULL BEGIN " + _SQLITE_DELAY_ADD + " END",
    "spdist_tally_attempts_upd": "AFTER UPDATE OF outcome ON distribution_attempts "
    "WHEN OLD.outcome IS NOT NEW.outcome BEGIN "
    + _add("attempts", "coalesce(OLD.outcome, 'in_flight')", "-1")
    + _add("attempts", "coalesce(NEW.outcome, 'in_flight')")
    + " END",
    "spdist_tally_attempts_upd_delay": "AFTER UPDATE OF outcome ON distribution_attempts "
    "WHEN NEW.number = 1 AND OLD.outcome IS NULL AND NEW.outcome IS NOT NULL BEGIN "
    + _SQLITE_DELAY_ADD
    + " END",
    "spdist_tally_attempts_del": "AFTER DELETE ON distribution_attempts "
    "WHEN OLD.outcome IS NULL BEGIN " + _add("attempts", "'in_flight'", "-1") + " END",
}


def _seed(delay: str) -> list[str]:
    """The totals of the rows already there (the triggers count what comes after)."""
    first = (
        "FROM distribution_attempts a JOIN distribution_requests r ON r.id = a.request_id "
        "WHERE a.number = 1 AND a.outcome IS NOT NULL"
    )
    return [
        "INSERT INTO metric_totals (series, label, n, total) "
        "SELECT 'requests', state, count(*), 0 FROM distribution_requests GROUP BY state",
        "INSERT INTO metric_totals (series, label, n, total) SELECT 'attempts', "
        "coalesce(outcome, 'in_flight'), count(*), 0 FROM distribution_attempts GROUP BY 2",
        f"INSERT INTO metric_totals (series, label, n, total) "
        f"SELECT 'delay', {bucket_of(delay)}, count(*), sum({delay}) {first} GROUP BY 2",
    ]


def upgrade() -> None:
    op.create_table(
        "metric_totals",
        sa.Column("series", sa.String(32), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("series", "label"),
    )
    op.create_table(
        "metric_deltas",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("series", sa.String(32), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns, unique=False)
    if op.get_bind().dialect.name == "postgresql":
        _pg_triggers()
        seed = _seed("extract(epoch FROM a.started_at - r.created_at)")
    else:
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
        seed = _seed("(julianday(a.started_at) - julianday(r.created_at)) * 86400.0")
    for statement in seed:  # after the triggers, in their transaction: nothing is missed
        op.execute(statement)


def _pg_triggers() -> None:
    for name, body in PG_FUNCTIONS.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {body}; RETURN NULL; END $$"
        )
        table, event, transitions = PG_TRIGGERS[name]
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {transitions} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, (table, _event, _t) in PG_TRIGGERS.items():
            op.execute(f"DROP TRIGGER {name} ON {table}")
            op.execute(f"DROP FUNCTION {name}()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    for name, (table, _columns) in INDEXES.items():
        op.drop_index(name, table_name=table)
    op.drop_table("metric_deltas")
    op.drop_table("metric_totals")
