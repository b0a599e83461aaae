"""Migrations: upgrade an empty database, match the models exactly, downgrade cleanly."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from worker.migrate import downgrade, upgrade
from worker.models import Base

pytestmark = pytest.mark.integration


def test_upgrade_matches_models_and_downgrade_empties(db_url: str) -> None:
    upgrade(db_url)  # the fixture already migrated: a second upgrade is a no-op
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
        downgrade(db_url)
        tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert tables == set()
        upgrade(db_url)
        assert {"distribution_requests", "distribution_attempts", "webhook_events"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()
