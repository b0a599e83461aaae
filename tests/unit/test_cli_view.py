"""worker/cli_view.py: relative times, unique id prefixes, the reason column, 100 columns."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console
from sqlalchemy.orm import Session

from worker import cli_view
from worker.db import make_engine
from worker.errors import NotFoundError, ValidationError
from worker.models import Base, DistributionRequest

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _iso(delta_s: float) -> str:
    return (NOW + timedelta(seconds=delta_s)).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("delta_s", "text"),
    [
        (3, "in 3 s"),
        (-42, "42 s ago"),
        (0, "now"),
        (125, "in 2 min 5 s"),
        (-900, "15 min ago"),
        (3 * 3600 + 60, "in 3 h 1 min"),
        (-2 * 86400, "2 d 0 h ago"),
    ],
)
def test_relative_times(delta_s: float, text: str) -> None:
    assert cli_view.relative(_iso(delta_s), NOW) == text


def test_unique_prefix_names_one_request() -> None:
    engine = make_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        for rid in ("abcd1111" + "0" * 24, "abcd2222" + "0" * 24):
            session.add(
                DistributionRequest(
                    id=rid,
                    user_id="a" * 24,
                    project_id="b" * 24,
                    upload_id="c" * 24,
                    seq=1,
                    state="queued",
                )
            )
        session.commit()
        assert cli_view.resolve_id(session, "ABCD1") == "abcd1111" + "0" * 24
        with pytest.raises(ValidationError, match="matches"):
            cli_view.resolve_id(session, "abcd")
        with pytest.raises(NotFoundError):
            cli_view.resolve_id(session, "ffff")
        with pytest.raises(NotFoundError):  # LIKE's wildcards are taken literally
            cli_view.resolve_id(session, "abc%")


def test_reason_column_within_100_columns() -> None:
    reason = "Internal server error (gave up after 8 attempts) " * 3
    row = {
        "id": "f" * 32,
        "state": "dead",
        "userId": "a" * 24,
        "projectId": "b" * 24,
        "uploadId": "c" * 24,
        "createdAt": _iso(-60),
        "nextAttemptAt": None,
        "estimatedDispatchAt": None,
        "message": reason,
    }
    out = Console(width=100, record=True, file=io.StringIO())
    out.print(cli_view.distributions_table([row]))
    text = out.export_text()
    assert "reason" in text and "Internal server error" in text and "…" in text
    assert "ffffffff" in text and "f" * 9 not in text
    assert all(len(line) <= 100 for line in text.splitlines())
