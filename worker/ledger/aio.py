"""The ledger's enqueue for asyncio on PostgreSQL (the API's batched path): the same
statements as `PostgresLedger.insert`, on psycopg's async connections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from worker.ledger import statements as q
from worker.ledger.postgres import supersede_and_insert_params, superseded

INSERT = q.SUPERSEDE_AND_INSERT_DIRECT
COUNT = q.COUNT_WAITING_BY_USER_DIRECT


class AsyncPostgresLedger:
    """Stores coalescing requests many at a time: one round trip per batch."""

    async def count_waiting(
        self, conn: psycopg.AsyncConnection[Any], user_ids: Sequence[str]
    ) -> dict[str, int]:
        """How many requests each of these users has waiting (held ones included)."""
        cur = await conn.execute(COUNT.sql, COUNT.values({"uids": list(user_ids)}))
        return {str(row[0]): int(row[1]) for row in await cur.fetchall()}

    async def insert_many(
        self, conn: psycopg.AsyncConnection[Any], batch: Sequence[dict[str, Any]]
    ) -> list[Any]:
        """Each new request's row stored, superseding as `insert(coalesce=True)` does, in
        one pipeline: one implicit transaction, all or nothing. The superseded rows (or
        None), in the batch's order."""
        params = [INSERT.values(supersede_and_insert_params(v)) for v in batch]
        if len(params) == 1:
            cursors = [await conn.execute(INSERT.sql, params[0], prepare=True)]
        else:
            async with conn.pipeline():
                cursors = [await conn.execute(INSERT.sql, p, prepare=True) for p in params]
        return [superseded(await cur.fetchall()) for cur in cursors]
