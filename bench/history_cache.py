"""The history database, built once and kept between runs as a template.

Building 2 M requests and 4 M attempts is most of the history scenario's time. The built
database is kept in the cluster under a name carrying the sizes and a digest of what made
it (bench/history_seed.py and every migration): a run finds it and copies it with `CREATE
DATABASE … TEMPLATE … STRATEGY FILE_COPY`, a file copy, in seconds. A change to the seed or
the schema changes the digest; the template of the same sizes made by older code is dropped
then. The template accepts no connections, so nothing changes it after its build.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.infra import PG_ADMIN_URL, PG_BASE

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "spdist_bench_hist"


def digest() -> str:
    """What the history is made of: the seed's code and the schema's migrations."""
    h = hashlib.sha256()
    for path in [
        ROOT / "bench" / "history_seed.py",
        *sorted((ROOT / "migrations" / "versions").glob("*.py")),
    ]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def template_name(requests: int, attempts: int, users: int) -> str:
    return f"{PREFIX}_{requests}_{attempts}_{users}_{digest()}"


@contextmanager
def history_db(
    requests: int, attempts: int, users: int, build: Callable[[str], None]
) -> Iterator[tuple[str, float, bool]]:
    """A throwaway copy of the cached history (built first with `build(url)` when missing):
    its URL, the seconds it took to have it, and whether the cache had it."""
    import psycopg

    name = template_name(requests, attempts, users)
    t = time.monotonic()
    cached = _exists(name)
    if not cached:
        _make_template(name, build)
    copy = f"spdist_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{name}" STRATEGY FILE_COPY')
    took = time.monotonic() - t
    try:
        yield f"{PG_BASE}/{copy}", took, cached
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')


def _exists(name: str) -> bool:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    return row is not None


def _make_template(name: str, build: Callable[[str], None]) -> None:
    """Build under a name of its own, then rename: two runs building at once never share
    a half-built database; the loser of the rename drops its own."""
    import psycopg

    from worker.migrate import upgrade

    building = f"{PREFIX}_building_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{building}"')
    try:
        url = f"{PG_BASE}/{building}"
        upgrade(url)
        build(url)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            _drop_stale(conn, name)
            conn.execute(f'ALTER DATABASE "{building}" WITH ALLOW_CONNECTIONS false')
            conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
    except psycopg.errors.DuplicateDatabase:
        pass  # another run made it meanwhile
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')


def _drop_stale(conn: object, name: str) -> None:
    """Templates of the same sizes made by another version of the seed or schema."""
    sizes = name.rsplit("_", 1)[0] + "_"
    rows = conn.execute(  # type: ignore[attr-defined]
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s) AND datname <> %s",
        [sizes, name],
    ).fetchall()
    for (stale,) in rows:
        conn.execute(f'DROP DATABASE IF EXISTS "{stale}" WITH (FORCE)')  # type: ignore[attr-defined]
