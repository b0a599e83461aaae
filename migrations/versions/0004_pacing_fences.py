"""pacing_fences: per userId, the instant before which no call may leave, moved by the claim

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pacing_fences",
        sa.Column("user_id", sa.String(length=24), nullable=False),
        sa.Column("not_before_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    # Each user's fence starts where its attempts left the lane.
    op.execute(
        "INSERT INTO pacing_fences (user_id, not_before_us, updated_at) "
        "SELECT user_id, MAX(lane_free_us), CURRENT_TIMESTAMP FROM distribution_attempts "
        "GROUP BY user_id"
    )


def downgrade() -> None:
    op.drop_table("pacing_fences")
