"""A year of finished history, built inside PostgreSQL with `INSERT … SELECT generate_series`.

`users` users, ten projects each; requests spread evenly over `days` days (oldest first),
in the terminal states a real history holds (mostly confirmed, some failed, dead,
cancelled, superseded); each request with `attempts` calls (a 429 first, then the 200).
Every attempt's `lane_free_us` is in the past, as a finished history leaves it.
Request ids count up (hex) rather than being random: the indexes are then built in order,
which is most of what makes 2 M requests fit in `make bench`. Build it on an empty database,
before the live rows (every request there gets its attempts).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

STATES = (
    "confirmed",
    "confirmed",
    "confirmed",
    "confirmed",
    "succeeded",
    "failed",
    "dead",
    "cancelled",
    "superseded",
    "confirmed",
)
HISTORY_USER_BASE = 0xB7000000
DAYS = 365.0

REQUESTS_SQL = """
INSERT INTO distribution_requests (id, user_id, project_id, upload_id, priority, seq, coalesce,
    state, created_at, updated_at, attempt_count, failures, published_at)
SELECT lpad(to_hex(g), 32, '0'), lpad(to_hex(:user_base + g % :users), 24, '0'),
    lpad(to_hex(:project_base + (g % :users) * 10 + (g / :users) % 10), 24, '0'),
    lpad(to_hex(:upload_base + g), 24, '0'), 0, g, true,
    (CAST(:states AS text[]))[1 + g % :nstates],
    now() - make_interval(secs => :span_s * (1 - g::float8 / :n) + 86400),
    now() - make_interval(secs => :span_s * (1 - g::float8 / :n) + 86400 - 300),
    :attempts, 0, now() - make_interval(secs => :span_s * (1 - g::float8 / :n) + 86400)
FROM generate_series(1, :n) AS g
"""

ATTEMPTS_SQL = """
INSERT INTO distribution_attempts (request_id, number, user_id, started_at, slot_us,
    lane_free_us, finished_at, http_status, outcome, message, worker)
SELECT r.id, k, r.user_id, r.created_at + make_interval(secs => 120 * k),
    (extract(epoch FROM r.created_at)::bigint + 120 * k) * 1000000,
    (extract(epoch FROM r.created_at)::bigint + 120 * k + 120) * 1000000,
    r.created_at + make_interval(secs => 120 * k + 1),
    CASE WHEN k < :attempts THEN 429 ELSE 200 END,
    CASE WHEN k < :attempts THEN 'rate_limited' ELSE 'triggered' END,
    NULL, 'history'
FROM distribution_requests r CROSS JOIN generate_series(1, :attempts) AS k
ORDER BY r.id, k
"""


# Secondary indexes only: primary keys and unique constraints stay (they are the checks).
INDEXES_SQL = """
SELECT i.indexname, i.indexdef FROM pg_indexes i
WHERE i.tablename IN ('distribution_requests', 'distribution_attempts')
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
"""
ATTEMPTS_FK = "distribution_attempts_request_id_fkey"
ATTEMPTS_FK_DROP = f"ALTER TABLE distribution_attempts DROP CONSTRAINT {ATTEMPTS_FK}"
ATTEMPTS_FK_ADD = (
    f"ALTER TABLE distribution_attempts ADD CONSTRAINT {ATTEMPTS_FK} FOREIGN KEY (request_id) "
    "REFERENCES distribution_requests (id) ON DELETE CASCADE"
)


def _drop_indexes(conn: Any) -> list[str]:
    """Drop the secondary indexes; the statements that make them again."""
    found = conn.execute(text(INDEXES_SQL)).all()
    for name, _definition in found:
        conn.execute(text(f'DROP INDEX "{name}"'))
    return [definition for _name, definition in found]


def build(
    engine: Engine, requests: int, attempts: int = 2, users: int = 20, days: float = DAYS
) -> None:
    """Insert the history (requests, then their attempts), then ANALYZE."""
    params = {
        "user_base": HISTORY_USER_BASE,
        "users": users,
        "project_base": 0xC7000000,
        "upload_base": 0xD7000000,
        "states": list(STATES),
        "nstates": len(STATES),
        "span_s": days * 86400.0,
        "n": requests,
        "attempts": attempts,
    }
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        # Rows first, then the indexes and the foreign key, built once each: maintained row
        # by row, 2 M requests and 4 M attempts took ~8 minutes; built after, ~1.
        again = _drop_indexes(conn)
        conn.execute(text(ATTEMPTS_FK_DROP))
        conn.execute(text(REQUESTS_SQL), params)
        conn.execute(text(ATTEMPTS_SQL), params)
        for statement in [*again, ATTEMPTS_FK_ADD]:
            conn.execute(text(statement))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE distribution_requests"))
        conn.execute(text("VACUUM ANALYZE distribution_attempts"))
