"""`POST /v1/distributions` on the event loop, for PostgreSQL, in batches.

The sync path runs each enqueue in a pool thread; its SQL statement and its Lua call each
hand that thread back and forth through the GIL, and under load that hand-over, not the
work, was most of the API's CPU. Here the same statement (ledger's, compiled once) runs on
psycopg's async connections and the same wake script on redis.asyncio, in the loop.

Requests that arrive while a batch is being stored wait for the next one (group commit):
a batch is one round trip to PostgreSQL (pipeline mode, one implicit transaction: all of
its rows or none) and one to Redis (a pipeline of wake calls). Per request, that saves a
pool checkout, a round trip and a loop wake-up on each side (docs/BENCHMARKS.md, design
measurements, gives the rates before and after). A batch
PostgreSQL refuses (a deadlock with another batch, one bad row) is stored again request
by request, so one request's error is its own.

Same results as `distributions.enqueue_placed`: SQL first; Redis unreachable leaves the
request to the outbox (the reconciler puts it in its lane).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from redis import RedisError
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from worker import backpressure
from worker.context import Context, make_async_redis
from worker.distributions import NewDistribution, member, new_values, score, stored
from worker.errors import PacerUnavailable
from worker.ledger import Ledger, PostgresLedger
from worker.ledger.aio import AsyncPostgresLedger
from worker.models import DistributionRequest
from worker.pacer import Placed, Wake
from worker.pacer.aio import AsyncLanes

log = logging.getLogger(__name__)
MAX_BATCH = 64  # requests per round trip
MAX_FLUSHES = 2  # batches in flight at once: one stored while the next one fills
# The statement is prepared (parsed once per connection), and these connections plan it
# anew from each run's values, as the thread path does by not preparing it (a generic plan
# made while the table was small scanned a lane per insert). Parsing was a large part of
# PostgreSQL's CPU per enqueue (BENCHMARKS.md, design measurements).
PLAN_EACH_TIME = "-c plan_cache_mode=force_custom_plan"

Enqueued = tuple[DistributionRequest, Placed | None]
Waiting = tuple[dict[str, Any], "asyncio.Future[Enqueued]"]
Stored = tuple[DistributionRequest, str | None]  # the request, the lane member it replaced


class AsyncEnqueue:
    """Enqueue without a thread: for coalescing requests on PostgreSQL."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        url = make_url(ctx.settings.database_url).set(drivername="postgresql")
        self.pool = AsyncConnectionPool(
            url.render_as_string(hide_password=False),
            min_size=1,
            max_size=ctx.settings.api_threads,
            kwargs={"autocommit": True, "row_factory": namedtuple_row, "options": PLAN_EACH_TIME},
            open=False,
        )
        redis = make_async_redis(ctx.settings.redis_url, ctx.settings.redis_master_name)
        self.lanes = AsyncLanes(ctx.pacer, redis)
        self.ledger = AsyncPostgresLedger()
        self._waiting: list[Waiting] = []
        self._admitted: Counter[str] = Counter()  # users' requests in a batch being stored
        self._cap_lock = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()
        self._sends: set[asyncio.Task[None]] = set()
        self.batches = 0  # batches stored, for tests and curiosity

    @staticmethod
    def serves_ledger(ledger: Ledger) -> bool:
        """Whether the context's ledger has this path's async twin (PostgreSQL's)."""
        return isinstance(ledger, PostgresLedger)

    @staticmethod
    def serves(new: NewDistribution) -> bool:
        """Whether this path takes `new`: coalescing requests (the one-statement insert),
        not held ones (they go to no lane), nor those with a callback URL (a column its
        batch insert does not write)."""
        return new.coalesce and not new.hold and new.callback_url is None

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        if self._flushes:  # what was accepted is stored before the connections go
            await asyncio.gather(*self._flushes, return_exceptions=True)
        if self._sends:  # and the dispatch messages of lanes it woke are sent
            await asyncio.gather(*self._sends, return_exceptions=True)
        await self.pool.close()
        await self.lanes.aclose()

    async def enqueue(self, new: NewDistribution) -> Enqueued:
        """Store `new` and put it in its lane, with whatever else is waiting."""
        done: asyncio.Future[Enqueued] = asyncio.get_running_loop().create_future()
        self._waiting.append((new_values(new), done))
        if len(self._flushes) < MAX_FLUSHES:
            task = asyncio.create_task(self._flush())
            self._flushes.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._flushes.discard)
        # Not cancelled with the request: a client that hangs up still has its request stored.
        return await asyncio.shield(done)

    async def _within_cap(self, batch: list[Waiting]) -> list[Waiting]:
        """Answer TooManyWaiting to the requests past SPDIST_MAX_WAITING_PER_USER (one count
        for the whole batch); the others, to be stored.

        The other batch in flight is not in SQL yet, so its admitted requests count too; the
        count and the admission are one step (a lock), or two batches could each see room for
        the same last place. A batch committed meanwhile is counted twice: a refusal near the
        cap, never a request past it."""
        cap, kept, refused = self.ctx.settings.max_waiting_per_user, [], []
        async with self._cap_lock:
            admitted = Counter(self._admitted)
            counts = await self._count_waiting(sorted({v["user_id"] for v, _ in batch}))
            for values, done in batch:
                user = values["user_id"]
                waiting = counts.get(user, 0) + admitted[user]
                if waiting >= cap:
                    refused.append((user, waiting, done))
                    continue
                counts[user] = counts.get(user, 0) + 1
                kept.append((values, done))
            self._admitted.update(values["user_id"] for values, _ in kept)
        for user, waiting, done in refused:  # the Retry-After reads the pacer (sync Redis)
            refusal = await run_in_threadpool(backpressure.refusal, self.ctx, user, waiting)
            done.set_exception(refusal)
        return kept

    def _done_with(self, batch: list[Waiting]) -> None:
        """The batch is stored (or refused): SQL counts its requests from now on."""
        self._admitted.subtract(values["user_id"] for values, _ in batch)
        self._admitted = +self._admitted  # drop the zeros

    async def _count_waiting(self, user_ids: list[str]) -> dict[str, int]:
        async with self.pool.connection() as conn:
            return await self.ledger.count_waiting(conn, user_ids)

    async def _flush(self) -> None:
        while self._waiting:
            batch = self._waiting[:MAX_BATCH]
            del self._waiting[:MAX_BATCH]
            try:
                batch = await self._within_cap(batch)
                if not batch:
                    continue
                try:
                    results = await self._store([values for values, _ in batch])
                finally:
                    self._done_with(batch)
                placed = await self._publish([r for r in results if not isinstance(r, Exception)])
            except Exception as exc:  # noqa: BLE001 - each caller gets it as its answer
                results, placed = [exc] * len(batch), []
            answers = iter(placed)
            for (_, done), result in zip(batch, results, strict=True):
                if isinstance(result, Exception):
                    done.set_exception(result)
                else:
                    done.set_result((result[0], next(answers)))

    async def _store(self, batch: list[dict[str, Any]]) -> list[Stored | Exception]:
        try:
            found: list[Stored | Exception] = list(await self._run(batch))
            self.batches += 1
            return found
        except psycopg.Error as exc:
            if len(batch) == 1 or self.pool.closed or _connection_lost(exc):
                raise
            log.warning(
                "a batch of %d requests refused (%s); storing them one by one",
                len(batch),
                type(exc).__name__,
            )
        return [await self._one(values) for values in batch]

    async def _one(self, values: dict[str, Any]) -> Stored | Exception:
        try:
            return (await self._run([values]))[0]
        except psycopg.Error as exc:
            return exc

    async def _run(self, batch: list[dict[str, Any]]) -> list[Stored]:
        """The batch's statements in one pipeline: one implicit transaction, all or nothing."""
        async with self.pool.connection() as conn:
            olds = await self.ledger.insert_many(conn, batch)
        return [stored(v, old) for v, old in zip(batch, olds, strict=True)]

    async def _publish(self, batch: Sequence[Stored]) -> list[Placed | None]:
        """Put each request in its lane (one Redis round trip) and wake the idle lanes."""
        if not batch:
            return []
        entries = [(req.user_id, member(req), score(req), replaced) for req, replaced in batch]
        try:
            answers = await self.lanes.enqueue_many(entries)
        except RedisError as exc:
            log.warning("%d requests stored; publishing waits for Redis: %s", len(batch), exc)
            return [None] * len(batch)
        placed: list[Placed | None] = []
        for (req, _), answer in zip(batch, answers, strict=True):
            if isinstance(answer, Exception):
                log.warning("request %s stored; publishing waits for Redis: %s", req.id, answer)
            placed.append(None if isinstance(answer, Exception) else answer)
        wakes = [
            (req.user_id, p.wake)
            for (req, _), p in zip(batch, placed, strict=True)
            if p is not None and p.wake is not None
        ]
        if wakes:  # kombu is synchronous: a thread, once per batch with idle lanes
            # The answers do not wait for it: each request is stored and in its lane, which
            # is all they report. A message the broker refuses is sent again by whoever
            # wakes the lane once its marker lapses (the reconciler within a pass). A burst
            # of sends (lanes woken together) no longer holds up the batch's answers.
            task = asyncio.create_task(run_in_threadpool(self._send, wakes))
            self._sends.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._sends.discard)
        return placed

    def _send(self, wakes: list[tuple[str, Wake]]) -> None:
        """Publish each lane's dispatch message; a refused one is logged, and waits."""
        for user_id, wake in wakes:
            try:
                self.ctx.send(user_id, wake)
            except PacerUnavailable as exc:
                log.warning("lane of %s woken; its message waits for the broker: %s", user_id, exc)


def _connection_lost(exc: psycopg.Error) -> bool:
    """Whether the error is the connection's (retrying one by one would fail the same way)."""
    return isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None
