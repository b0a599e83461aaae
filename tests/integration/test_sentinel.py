"""Redis behind Sentinels: the pacer, the broker and the API's async client reach the master
through them, and follow it when a failover promotes the replica."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from celery import Celery
from kombu.exceptions import OperationalError

from api.enqueue_async import AsyncEnqueue
from tests.conftest import USER_KEYS
from worker import distributions
from worker.celery_app import celery_config
from worker.context import Context, build_context
from worker.dev.procs import spdist_env, start_fake, start_worker, wait_for
from worker.dev.servers import SentinelCluster
from worker.dev.stack import Stack, ensure_redis, redis_answers
from worker.distributions import NewDistribution
from worker.errors import PacerUnavailable
from worker.pacer import Wake
from worker.settings import Settings, get_settings

pytestmark = pytest.mark.integration
T = TypeVar("T")
USERS = list(USER_KEYS)[:2]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    c = SentinelCluster(tmp_path, db=3)  # not 0: each client must find the database too
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def app(cluster: SentinelCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    """A Celery app configured as spdist's is, from SPDIST_REDIS_URL and the master's name."""
    monkeypatch.setenv("SPDIST_REDIS_URL", cluster.url)
    monkeypatch.setenv("SPDIST_REDIS_MASTER_NAME", cluster.master_name)
    get_settings.cache_clear()
    app = Celery("spdist-sentinel-test", set_as_current=False)
    app.add_defaults(celery_config)
    try:
        yield app
    finally:
        app.close()
        get_settings.cache_clear()


def context(db_url: str, cluster: SentinelCluster, sent: list[tuple[str, Wake]]) -> Context:
    settings = Settings(
        database_url=db_url,
        redis_url=cluster.url,
        redis_master_name=cluster.master_name,
        api_keys=USER_KEYS,
        min_interval_s=60,
    )
    return build_context(settings, send=lambda user, wake: sent.append((user, wake)))


def new(user: str) -> NewDistribution:
    upload = uuid.uuid4().hex[:24]
    return NewDistribution(user, upload, upload, coalesce=True)


def until_up(fn: Callable[[], T], *errors: type[Exception]) -> T:
    """fn's result once it stops failing with `errors` (and only those)."""
    result: list[T] = []

    def attempt() -> bool:
        try:
            result.append(fn())
        except errors:
            return False
        return True

    wait_for(attempt, 60, f"{fn} to work again", every=0.1)
    return result[0]


def replicated(cluster: SentinelCluster) -> None:
    """What the master holds has reached the replica (so a failover keeps it)."""
    with cluster.client() as r:
        assert r.wait(1, 5000) >= 1


def test_the_pacer_and_the_async_enqueue_follow_the_master(
    pg_url: str, cluster: SentinelCluster
) -> None:
    sent: list[tuple[str, Wake]] = []
    ctx = context(pg_url, cluster, sent)
    fast = AsyncEnqueue(ctx)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(fast.open())
        before = distributions.enqueue(ctx, new(USERS[0]))
        _, placed = loop.run_until_complete(fast.enqueue(new(USERS[1])))
        assert placed is not None and len(sent) == 1  # the sync path published its lane
        replicated(cluster)
        cluster.kill_master()
        # Meanwhile the pacer fails closed (PacerUnavailable, nothing else), then finds the
        # new master; the lane it had is there, replicated.
        until_up(lambda: ctx.pacer.members(USERS[0]), PacerUnavailable)
        cluster.wait_failover()
        assert [m.split(":")[1] for m in ctx.pacer.members(USERS[0])] == [before.id]
        distributions.enqueue(ctx, new(USERS[0]))
        assert len(ctx.pacer.members(USERS[0])) == 2
        _, placed = loop.run_until_complete(fast.enqueue(new(USERS[1])))
        assert placed is not None  # the API's client reached the new master too
        assert len(ctx.pacer.members(USERS[1])) == 2
    finally:
        loop.run_until_complete(fast.close())
        loop.close()
        ctx.close()


def test_the_broker_follows_the_master(app: Celery, cluster: SentinelCluster) -> None:
    def send(n: int) -> str:
        return str(app.send_task("spdist.dispatch", kwargs={"n": n}, queue="spdist").id)

    sent = [send(1)]
    replicated(cluster)
    cluster.kill_master()
    sent.append(until_up(lambda: send(2), OperationalError))
    cluster.wait_failover()
    sent.append(send(3))  # on the new master at once
    with cluster.client() as r:  # on the new master, in the URL's database
        assert r.llen("spdist") == len(sent)
    got = []
    with app.connection_for_read() as conn, conn.SimpleQueue("spdist") as queue:
        for _ in sent:
            message = queue.get(timeout=10)
            got.append(message.headers["id"])
            message.ack()
    assert got == sent
    with cluster.client() as r:  # read and acknowledged on the new master
        assert r.llen("spdist") == 0 and r.hlen("unacked") == 0


def test_the_stack_asks_the_sentinels_and_starts_no_redis(cluster: SentinelCluster) -> None:
    out = io.StringIO()
    stack = Stack({}, out=out)
    assert redis_answers(cluster.url, cluster.master_name)
    assert ensure_redis(stack, cluster.url, Path("unused"), cluster.master_name)
    assert not redis_answers(cluster.url, "no-such-master")
    assert not ensure_redis(stack, cluster.url, Path("unused"), "no-such-master")
    assert stack.children == [] and "SPDIST_REDIS_MASTER_NAME" in out.getvalue()


def test_the_api_and_flower_on_sentinels(
    pg_url: str, cluster: SentinelCluster, tmp_path: Path
) -> None:
    """The processes as deployed: the API, a worker and Flower, all through the Sentinels."""
    from tests.integration.test_api import TOKEN, start_api
    from tests.integration.test_flower import FLOWER_AUTH, dispatched_in_flower, start_flower

    user, key = uuid.uuid4().hex[:24], "sk-sentinel-" + uuid.uuid4().hex
    fake, sp_url = start_fake(tmp_path, interval_s=0.5)
    name = cluster.master_name
    env = spdist_env(
        pg_url,
        cluster.url,
        sp_url,
        {user: key},
        SPDIST_API_TOKENS=TOKEN,
        SPDIST_REDIS_MASTER_NAME=name,
    )
    procs = [fake]
    try:
        flower, fbase = start_flower(env, tmp_path)
        procs += [flower, start_worker("sentinelw", env, tmp_path)]
        api, base = start_api(env, tmp_path)
        procs.append(api)
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert dispatched_in_flower(base, fbase, user)["name"] == "spdist.dispatch"
        broker = httpx.get(f"{fbase}/broker", auth=FLOWER_AUTH, timeout=10)
        assert broker.status_code == 200 and "spdist" in broker.text
        cluster.kill_master()
        cluster.wait_failover()
        # The API lived through it: ready again, and a request goes straight into its lane.
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "the API ready")
        body = {"userId": user, "projectId": uuid.uuid4().hex[:24], "uploadId": "f" * 24}
        auth = {"Authorization": f"Bearer {TOKEN}"}
        created = httpx.post(f"{base}/v1/distributions", json=body, headers=auth)
        assert created.status_code == 202, created.text
        lane = httpx.get(f"{base}/v1/users/{user}/lane", headers=auth).json()
        assert created.json()["id"] in [item["id"] for item in lane["items"]]
    finally:
        for p in procs:
            p.stop()
