"""The event-loop enqueue on real PostgreSQL and Redis: requests that arrive together are
stored in one batch with the same results as one by one, and a batch PostgreSQL refuses
costs no request but the bad one."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.enqueue_async import AsyncEnqueue
from tests.integration.test_api import close, free_port, make_ctx
from worker.context import Context
from worker.distributions import NewDistribution
from worker.models import DistributionRequest, State
from worker.pacer import Wake

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(pg_url: str, redis_url: str) -> Iterator[tuple[Context, list[tuple[str, Wake]]]]:
    sent: list[tuple[str, Wake]] = []
    ctx = make_ctx(pg_url, redis_url, sent)
    try:
        yield ctx, sent
    finally:
        close(ctx)


def user() -> str:
    return uuid.uuid4().hex[:24]


def new(user_id: str, project: int, upload: int, **kw: Any) -> NewDistribution:
    return NewDistribution(user_id, f"{project:024x}", f"{upload:024x}", **kw)


async def enqueue_together(ctx: Context, news: list[NewDistribution]) -> tuple[list[Any], int]:
    """Enqueue all at once on one AsyncEnqueue; (each one's answer or error, batches stored)."""
    fast = AsyncEnqueue(ctx)
    await fast.open()
    try:
        answers = await asyncio.gather(*(fast.enqueue(n) for n in news), return_exceptions=True)
    finally:
        await fast.close()
    return list(answers), fast.batches


def rows(ctx: Context) -> dict[str, DistributionRequest]:
    with Session(ctx.engine) as s:
        return {r.id: r for r in s.scalars(select(DistributionRequest))}


def test_requests_arriving_together_share_a_batch(ctx: tuple[Context, list[Any]]) -> None:
    c, sent = ctx
    users = [user() for _ in range(5)]
    news = [new(u, p, 100 * p + i) for i in range(4) for p, u in enumerate(users)]
    news.append(new(users[0], 0, 999))  # supersedes users[0]'s queued request of project 0
    answers, batches = asyncio.run(enqueue_together(c, news))
    assert not [a for a in answers if isinstance(a, BaseException)]
    assert batches < len(news) // 2  # they did not go one by one
    stored = rows(c)
    assert len(stored) == len(news)
    states = [stored[req.id].state for req, _ in answers]
    # Same project, coalescing: each one supersedes the one before, inside the batch too.
    assert states.count(State.QUEUED) == len(users)
    assert states.count(State.SUPERSEDED) == len(news) - len(users)
    last_wake = {user_id: wake.member for user_id, wake in sent}
    for u in users:  # one member per lane, the newest request, and the lane's last wake for it
        (lane,) = c.pacer.members(u)
        assert lane.split(":")[1] in {req.id for req, _ in answers if req.state == State.QUEUED}
        assert last_wake[u] == lane
    placed = [p for _, p in answers]
    assert all(p is not None for p in placed)


def test_a_refused_batch_is_stored_one_by_one(
    ctx: tuple[Context, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    c, _ = ctx
    u = user()
    news = [new(u, p, p) for p in range(1, 9)]
    bad = NewDistribution(u, "f" * 30, "e" * 24)  # wider than its column: PostgreSQL says no
    news.insert(4, bad)
    answers, _ = asyncio.run(enqueue_together(c, news))
    assert isinstance(answers[4], psycopg.errors.StringDataRightTruncation)
    assert "a batch of 9 requests refused" in caplog.text
    good = [a for i, a in enumerate(answers) if i != 4]
    assert not [a for a in good if isinstance(a, BaseException)]
    stored = rows(c)
    # The others, each once: the refused batch left nothing behind (one transaction).
    assert set(stored) == {req.id for req, _ in good}
    assert len(c.pacer.members(u)) == len(good)


def test_redis_down_the_batch_is_stored_for_the_outbox(pg_url: str) -> None:
    c = make_ctx(pg_url, f"redis://127.0.0.1:{free_port()}/0", [])
    try:
        u = user()
        answers, batches = asyncio.run(enqueue_together(c, [new(u, p, p) for p in range(6)]))
        assert [placed for _, placed in answers] == [None] * 6  # the reconciler places them
        assert batches >= 1 and len(rows(c)) == 6
    finally:
        close(c)


def test_a_caller_that_goes_away_still_has_its_request_stored(
    ctx: tuple[Context, list[Any]],
) -> None:
    c, _ = ctx
    u = user()

    async def hang_up() -> None:
        fast = AsyncEnqueue(c)
        await fast.open()
        try:
            callers = [asyncio.create_task(fast.enqueue(new(u, p, p))) for p in range(4)]
            await asyncio.sleep(0)  # the batch is on its way
            for t in callers:
                t.cancel()
            await asyncio.gather(*callers, return_exceptions=True)
        finally:
            await fast.close()  # waits for the batch in flight

    asyncio.run(hang_up())
    assert len(rows(c)) == 4 and len(c.pacer.members(u)) == 4


def test_answers_do_not_wait_for_the_dispatch_message(pg_url: str, redis_url: str) -> None:
    """The broker is slow: the batch is answered once stored and in its lanes; the message
    still goes out, and close() waits for it."""
    sent: list[tuple[str, Wake]] = []
    release = threading.Event()

    def slow_publish(user_id: str, wake: Wake) -> None:
        assert release.wait(10)
        sent.append((user_id, wake))

    c = make_ctx(pg_url, redis_url, sent)
    c = dataclasses.replace(c, send=slow_publish)
    u = user()

    async def run() -> tuple[list[Any], list[Any]]:
        fast = AsyncEnqueue(c)
        await fast.open()
        try:
            answers = await asyncio.wait_for(
                asyncio.gather(*(fast.enqueue(new(u, p, p)) for p in range(3))), 5
            )
            before = list(sent)  # answered while the message was still on its way
        finally:
            release.set()
            await fast.close()
        return answers, before

    try:
        answers, before = asyncio.run(run())
        assert before == []
        assert all(placed is not None for _, placed in answers)
        assert [user_id for user_id, _ in sent] == [u]  # one message: the lane's head
        assert sent[0][1].member == c.pacer.members(u)[0]
    finally:
        close(c)


def test_the_batch_statement_is_planned_from_each_runs_values(
    ctx: tuple[Context, list[Any]],
) -> None:
    """Prepared, but never a generic plan: one made while the table was small would scan
    a whole lane per insert once it grew."""
    c, _ = ctx

    async def run() -> list[Any]:
        fast = AsyncEnqueue(c)
        await fast.open()
        try:
            for i in range(12):  # psycopg prepares on the 5th run, PostgreSQL goes generic
                await fast.enqueue(new(user(), i, i))  # after 5 custom plans, unless told
            async with fast.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                )
                return list(await cur.fetchall())
        finally:
            await fast.close()

    plans = asyncio.run(run())
    assert plans, "the statement was not prepared"
    assert all(row.generic_plans == 0 and row.custom_plans > 0 for row in plans), plans
