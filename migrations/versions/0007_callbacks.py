"""callbacks: `distribution_requests.callback_url` and the outbox `callback_deliveries`

One row of `callback_deliveries` per try. A row trigger on `distribution_requests` writes
an event's first try (body still empty, due at once) in the transaction of the change of
state itself, whichever path made it (dispatch, webhook, cancel, supersede, the
reconciler): a committed change always has its callback waiting. The deliverer
(worker/deliverer.py) freezes the body at the first try and, when a try fails, completes
its row and writes the next try in one transaction, so the open row of an event is its
one pending try. Events of a request are numbered (`event_no`) in the order the changes
were committed: the update's row lock serialises them.

Each finished try adds one to `metric_totals` ('callbacks', its outcome) for /metrics.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENTS = ("succeeded", "confirmed", "failed", "dead", "cancelled", "superseded")
_STATES = ", ".join(f"'{s}'" for s in EVENTS)
_NEXT_NO = (
    "(SELECT coalesce(max(event_no), 0) + 1 FROM callback_deliveries WHERE request_id = NEW.id)"
)


def _first_try(now: str) -> str:
    return (
        "INSERT INTO callback_deliveries (request_id, event_no, event, try_no, created_at, "
        f"due_at) VALUES (NEW.id, {_NEXT_NO}, 'distribution.' || NEW.state, 1, {now}, {now})"
    )


PG_NOW = "clock_timestamp()"
SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"  # microseconds, as SQLAlchemy writes
PG_WHEN = {
    "INSERT": f"NEW.callback_url IS NOT NULL AND NEW.state IN ({_STATES})",
    "UPDATE": f"NEW.callback_url IS NOT NULL AND NEW.state IN ({_STATES}) "
    "AND OLD.state IS DISTINCT FROM NEW.state",
}
SQLITE_TRIGGERS = {
    "spdist_callback_ins": f"AFTER INSERT ON distribution_requests WHEN {PG_WHEN['INSERT']} "
    f"BEGIN {_first_try(SQLITE_NOW)}; END",
    "spdist_callback_upd": "AFTER UPDATE OF state ON distribution_requests "
    f"WHEN {PG_WHEN['UPDATE'].replace('IS DISTINCT FROM', 'IS NOT')} "
    f"BEGIN {_first_try(SQLITE_NOW)}; END",
    "spdist_tally_callbacks": "AFTER UPDATE OF outcome ON callback_deliveries "
    "WHEN OLD.outcome IS NULL AND NEW.outcome IS NOT NULL BEGIN "
    "INSERT INTO metric_totals (series, label, n, total) VALUES ('callbacks', NEW.outcome, 1, 0) "
    "ON CONFLICT (series, label) DO UPDATE SET n = n + 1; END",
}


def upgrade() -> None:
    op.add_column("distribution_requests", sa.Column("callback_url", sa.Text(), nullable=True))
    op.create_table(
        "callback_deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("event_no", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("try_no", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["distribution_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "event_no", "try_no", name="uq_callback_try"),
    )
    # The deliverer's "open tries that are due": only open rows are indexed on PostgreSQL.
    op.create_index(
        "ix_callbacks_open",
        "callback_deliveries",
        ["due_at"],
        postgresql_where=sa.text("finished_at IS NULL"),
        sqlite_where=sa.text("finished_at IS NULL"),
    )
    if op.get_bind().dialect.name == "postgresql":
        _pg_triggers()
    else:
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")


def _pg_triggers() -> None:
    op.execute(
        "CREATE FUNCTION spdist_callback_first_try() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {_first_try(PG_NOW)}; RETURN NULL; END $$"
    )
    for event, when in PG_WHEN.items():
        op.execute(
            f"CREATE TRIGGER spdist_callback_{event.lower()[:3]} AFTER {event} "
            f"ON distribution_requests FOR EACH ROW WHEN ({when}) "
            "EXECUTE FUNCTION spdist_callback_first_try()"
        )
    op.execute(
        "CREATE FUNCTION spdist_tally_callbacks() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN INSERT INTO metric_deltas (series, label, n, total) "
        "VALUES ('callbacks', NEW.outcome, 1, 0); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER spdist_tally_callbacks AFTER UPDATE OF outcome ON callback_deliveries "
        "FOR EACH ROW WHEN (OLD.outcome IS NULL AND NEW.outcome IS NOT NULL) "
        "EXECUTE FUNCTION spdist_tally_callbacks()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER spdist_tally_callbacks ON callback_deliveries")
        op.execute("DROP FUNCTION spdist_tally_callbacks()")
        for event in PG_WHEN:
            op.execute(f"DROP TRIGGER spdist_callback_{event.lower()[:3]} ON distribution_requests")
        op.execute("DROP FUNCTION spdist_callback_first_try()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_index("ix_callbacks_open", table_name="callback_deliveries")
    op.drop_table("callback_deliveries")
    op.drop_column("distribution_requests", "callback_url")
