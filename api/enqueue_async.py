"""`POST /v1/distributions` on the event loop, for PostgreSQL.

The sync path runs each enqueue in a pool thread; its SQL statement and its Lua call each
hand that thread back and forth through the GIL, and under load that hand-over, not the
work, was most of the API's CPU. Here the same statement (ledger's, compiled once) runs on
psycopg's async connections and the same wake script on redis.asyncio, in the loop.
Same results as `distributions.enqueue_placed`: SQL first; Redis unreachable leaves the
request to the outbox (the reconciler puts it in its lane).
"""

from __future__ import annotations

import logging

import redis.asyncio as aredis
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from redis import RedisError
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from worker import keys, ledger
from worker.context import Context
from worker.distributions import NewDistribution, member, new_values, score, stored
from worker.errors import PacerUnavailable
from worker.models import DistributionRequest
from worker.pacer import Placed, placed_from

log = logging.getLogger(__name__)
STATEMENT = ledger.SUPERSEDE_AND_INSERT_DIRECT


class AsyncEnqueue:
    """Enqueue without a thread: for coalescing requests on PostgreSQL."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        url = make_url(ctx.settings.database_url).set(drivername="postgresql")
        self.pool = AsyncConnectionPool(
            url.render_as_string(hide_password=False),
            min_size=1,
            max_size=ctx.settings.api_threads,
            kwargs={"autocommit": True, "row_factory": namedtuple_row},
            open=False,
        )
        self.redis = aredis.Redis.from_url(
            ctx.settings.redis_url, socket_timeout=5, socket_connect_timeout=5
        )
        self.wake = self.redis.register_script(ctx.pacer.wake_source)

    @staticmethod
    def serves(new: NewDistribution) -> bool:
        """Whether this path takes `new`: coalescing requests (the one-statement insert)."""
        return new.coalesce

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()
        await self.redis.aclose()

    async def enqueue(self, new: NewDistribution) -> tuple[DistributionRequest, Placed | None]:
        values = new_values(new)
        async with self.pool.connection() as conn:
            params = STATEMENT.values(ledger.supersede_and_insert_params(values))
            cur = await conn.execute(STATEMENT.sql, params, prepare=STATEMENT.prepare)
            rows = await cur.fetchall()
        req, replaced = stored(values, ledger.superseded(rows))
        return req, await self._publish(req, replaced)

    async def _publish(self, req: DistributionRequest, replaces: str | None) -> Placed | None:
        pacer = self.ctx.pacer
        args = pacer.wake_args(add=(member(req), score(req)), replaces=replaces)
        try:
            placed = placed_from(await self.wake(keys=keys.lane_keys(req.user_id), args=args))
            if placed.wake is not None:  # kombu is synchronous: a thread, once per idle lane
                await run_in_threadpool(self.ctx.publish, req.user_id, placed.wake)
        except (RedisError, PacerUnavailable) as exc:
            log.warning("request %s stored; publishing waits for Redis: %s", req.id, exc)
            return None
        return placed
