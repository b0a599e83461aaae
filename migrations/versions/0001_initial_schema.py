"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "distribution_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=24), nullable=False),
        sa.Column("project_id", sa.String(length=24), nullable=False),
        sa.Column("upload_id", sa.String(length=24), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("coalesce", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("superseded_by", sa.String(length=32), nullable=True),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("processing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_message", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("distribution_requests", schema=None) as batch_op:
        batch_op.create_index("ix_requests_created", ["created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_requests_lane", ["user_id", "state", "priority", "seq"], unique=False
        )
        batch_op.create_index("ix_requests_project_state", ["project_id", "state"], unique=False)
        batch_op.create_index(
            "ix_requests_state_lease", ["state", "lease_expires_at"], unique=False
        )
        batch_op.create_index("ix_requests_state_next", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index("ix_requests_unpublished", ["published_at"], unique=False)
        batch_op.create_index("ix_requests_upload", ["upload_id"], unique=False)

    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=24), nullable=True),
        sa.Column("upload_id", sa.String(length=24), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=128), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.create_index("ix_webhooks_unprocessed", ["processed_at"], unique=False)

    op.create_table(
        "distribution_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=24), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("slot_us", sa.BigInteger(), nullable=False),
        sa.Column("lane_free_us", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["distribution_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "number", name="uq_attempt_number"),
    )
    with op.batch_alter_table("distribution_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_attempts_user_free", ["user_id", "lane_free_us"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("distribution_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_attempts_user_free")

    op.drop_table("distribution_attempts")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index("ix_webhooks_unprocessed")

    op.drop_table("webhook_events")
    with op.batch_alter_table("distribution_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_requests_upload")
        batch_op.drop_index("ix_requests_unpublished")
        batch_op.drop_index("ix_requests_state_next")
        batch_op.drop_index("ix_requests_state_lease")
        batch_op.drop_index("ix_requests_project_state")
        batch_op.drop_index("ix_requests_lane")
        batch_op.drop_index("ix_requests_created")

    op.drop_table("distribution_requests")
