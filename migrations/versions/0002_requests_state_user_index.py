"""index (state, user_id): the reconciler's lanes-with-work query reads only waiting rows

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_requests_state_user", "distribution_requests", ["state", "user_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_requests_state_user", table_name="distribution_requests")
