"""callers: `created_by` on every request, and the Idempotency-Key unique per caller

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0001 left the key's unique constraint unnamed: PostgreSQL named it, SQLite did not.
OLD_UNIQUE = {"postgresql": "distribution_requests_idempotency_key_key"}
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _old_unique() -> str:
    name = op.get_bind().dialect.name
    return OLD_UNIQUE.get(name, "uq_distribution_requests_idempotency_key")


def upgrade() -> None:
    with op.batch_alter_table("distribution_requests", naming_convention=NAMING) as batch_op:
        batch_op.add_column(
            sa.Column(
                "created_by", sa.String(length=64), nullable=False, server_default="spdist:legacy"
            )
        )
        batch_op.drop_constraint(_old_unique(), type_="unique")
        batch_op.create_unique_constraint(
            "uq_requests_caller_key", ["created_by", "idempotency_key"]
        )
    op.create_index("ix_webhooks_upload_event", "webhook_events", ["upload_id", "event"])


def downgrade() -> None:
    op.drop_index("ix_webhooks_upload_event", table_name="webhook_events")
    with op.batch_alter_table("distribution_requests", naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint("uq_requests_caller_key", type_="unique")
        batch_op.create_unique_constraint(_old_unique(), ["idempotency_key"])
        batch_op.drop_column("created_by")
