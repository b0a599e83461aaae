"""The system of record's side of the flow: a port (port.Ledger) with an adapter per
database, chosen once by `for_engine` where the context is made (`Context.ledger`).

    port.py        the interface and what it answers (Snapshot, Loaded, Fenced)
    statements.py  every statement of the hot path, built once
    postgres.py    one statement per step, run directly on psycopg (direct.py)
    sqlite.py      a short transaction per step
    aio.py         the API's batched insert on asyncio (PostgreSQL)
    locks.py       the in-process lock around a count-then-insert
"""

from __future__ import annotations

from sqlalchemy import Engine

from worker.ledger.port import Fenced, Ledger, Loaded, RoomCheck, Snapshot
from worker.ledger.postgres import PostgresLedger
from worker.ledger.sqlite import SqliteLedger
from worker.ledger.statements import ATTEMPTS, FENCES, FLOOR, REQUESTS, A, F, R, W, waiting

__all__ = [
    "ATTEMPTS",
    "FENCES",
    "FLOOR",
    "REQUESTS",
    "A",
    "F",
    "R",
    "W",
    "Fenced",
    "Ledger",
    "Loaded",
    "PostgresLedger",
    "RoomCheck",
    "Snapshot",
    "SqliteLedger",
    "for_engine",
    "waiting",
]


def for_engine(engine: Engine) -> Ledger:
    """The adapter for the engine's database."""
    if engine.dialect.name == "postgresql":
        return PostgresLedger()
    if engine.dialect.name == "sqlite":
        return SqliteLedger()
    name = engine.dialect.name
    raise ValueError(f"spdist stores its records in PostgreSQL or SQLite, not {name}")
