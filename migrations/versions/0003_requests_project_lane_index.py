"""index (project_id, user_id, state, seq) in place of (project_id, state): enqueue's
"oldest queued request of this project" is one index probe, not a walk of the user's lane

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_requests_project_lane",
        "distribution_requests",
        ["project_id", "user_id", "state", "seq"],
        unique=False,
    )
    op.drop_index("ix_requests_project_state", table_name="distribution_requests")


def downgrade() -> None:
    op.create_index(
        "ix_requests_project_state", "distribution_requests", ["project_id", "state"], unique=False
    )
    op.drop_index("ix_requests_project_lane", table_name="distribution_requests")
