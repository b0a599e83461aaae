"""The HTTP API against real Redis and Postgres (and SQLite): in process, and as processes."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from api.main import create_app
from tests.conftest import USER_KEYS
from worker.context import Context, build_context
from worker.db import make_engine
from worker.dev.procs import PY, Proc, spdist_env, wait_for
from worker.models import DistributionRequest
from worker.pacer import Wake
from worker.settings import Settings

with warnings.catch_warnings():  # starlette asks for httpx2; httpx serves the same
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration
# A user of our own: other suites may share Redis database 9 while this one runs.
USER = uuid.uuid4().hex[:24]
KEYS = {**USER_KEYS, USER: "sk-api-test-secret"}
TOKEN = "tok-integration"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def body(n: int = 1, **kw: Any) -> dict[str, Any]:
    return {"userId": USER, "projectId": f"{n:024x}", "uploadId": f"{n + 100:024x}", **kw}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_ctx(db_url: str, redis_url: str, sent: list[tuple[str, Wake]], **options: Any) -> Context:
    """A context on real services whose dispatch messages land in `sent`."""
    options = {"api_keys": KEYS, "api_tokens": TOKEN, "min_interval_s": 60, **options}
    settings = Settings(database_url=db_url, redis_url=redis_url, **options)
    return build_context(settings, send=lambda user, wake: sent.append((user, wake)))


def close(ctx: Context) -> None:
    """Close what the context opened (the Postgres fixture drops its database after)."""
    ctx.close()


@pytest.fixture
def client(db_url: str, redis_url: str) -> Iterator[tuple[TestClient, Context]]:
    sent: list[tuple[str, Wake]] = []
    ctx = make_ctx(db_url, redis_url, sent)
    try:
        with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
            yield c, ctx
    finally:
        close(ctx)


def test_enqueue_lane_cancel_retry(client: tuple[TestClient, Context], redis_url: str) -> None:
    c, ctx = client
    first = c.post("/v1/distributions", json=body(1), headers=AUTH).json()
    second = c.post("/v1/distributions", json=body(2, priority=7), headers=AUTH).json()
    assert (first["state"], second["position"]) == ("queued", 1)
    assert len(ctx.pacer.members(USER)) == 2  # in the real Redis lane
    lane = c.get(f"/v1/users/{USER}/lane", headers=AUTH).json()
    assert [i["id"] for i in lane["items"]] == [second["id"], first["id"]]
    assert c.post(f"/v1/distributions/{first['id']}/cancel", headers=AUTH).status_code == 200
    assert len(ctx.pacer.members(USER)) == 1
    assert c.post(f"/v1/distributions/{first['id']}/retry", headers=AUTH).status_code == 409
    page = c.get("/v1/distributions", params={"limit": 1}, headers=AUTH).json()
    assert page["items"][0]["id"] == second["id"] and page["nextCursor"]
    page2 = c.get("/v1/distributions", params={"cursor": page["nextCursor"]}, headers=AUTH)
    assert [d["id"] for d in page2.json()["items"]] == [first["id"]]
    assert c.get("/readyz").status_code == 200
    assert 'spdist_requests{state="cancelled"} 1.0' in c.get("/metrics").text


def test_enqueue_supersedes_over_http(client: tuple[TestClient, Context]) -> None:
    """On PostgreSQL the enqueue runs on the event loop (async psycopg, redis.asyncio), on
    SQLite in a pool thread: the same answers either way."""
    c, ctx = client
    on_loop = c.app.state.enqueue_async is not None  # type: ignore[attr-defined]
    assert on_loop == ctx.settings.database_url.startswith("postgresql")
    first = c.post("/v1/distributions", json=body(1), headers=AUTH).json()
    again = c.post("/v1/distributions", json={**body(1), "uploadId": "e" * 24}, headers=AUTH)
    assert again.status_code == 202 and again.json()["position"] == 1
    assert c.get(f"/v1/distributions/{first['id']}", headers=AUTH).json()["state"] == "superseded"
    assert len(ctx.pacer.members(USER)) == 1  # the new one took the old one's place


def test_idempotency_key_in_sql(client: tuple[TestClient, Context]) -> None:
    c, ctx = client
    h = {**AUTH, "Idempotency-Key": "same"}
    a = c.post("/v1/distributions", json=body(1), headers=h)
    b = c.post("/v1/distributions", json=body(1), headers=h)
    other = c.post("/v1/distributions", json=body(2), headers=h)
    assert (a.status_code, b.status_code, other.status_code) == (202, 200, 409)
    assert a.json()["id"] == b.json()["id"]


def test_redis_down_still_accepts(db_url: str) -> None:
    """SQL holds the request: 202, unpublished, and /readyz says Redis is unavailable."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    ctx = make_ctx(db_url, dead, [])
    with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
        r = c.post("/v1/distributions", json=body(1), headers=AUTH)
        assert r.status_code == 202, r.text
        assert r.json()["state"] == "queued" and r.json()["position"] == 1
        assert c.get(f"/v1/users/{USER}/lane", headers=AUTH).status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "unavailable"
        assert c.get("/metrics").status_code == 200
    with ctx.sessions() as session:
        req = session.scalars(select(DistributionRequest)).one()
        assert req.published_at is None
    close(ctx)


def test_database_cut_off_answers_503_then_recovers(pg_url: str, redis_url: str) -> None:
    """Every connection the API holds is killed: a request meeting a dead one gets a clear
    503 and is not stored; the next ones are accepted on new connections."""
    import psycopg

    ctx = make_ctx(pg_url, redis_url, [])
    app = create_app(ctx, send_webhook_event=lambda *a: None)
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            assert c.post("/v1/distributions", json=body(1), headers=AUTH).status_code == 202
            dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            codes = [c.post("/v1/distributions", json=body(n), headers=AUTH) for n in range(2, 6)]
            refused = [r for r in codes if r.status_code != 202]
            assert all(r.status_code == 503 for r in refused), [r.text for r in refused]
            assert all("database is unavailable" in r.json()["detail"] for r in refused)
            assert refused and codes[-1].status_code == 202
        with ctx.sessions() as session:
            stored = session.scalars(select(DistributionRequest)).all()
        assert len(stored) == 1 + sum(r.status_code == 202 for r in codes)
    finally:
        close(ctx)


def start_api(env: dict[str, str], log_dir: Path, name: str = "api") -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(name, [PY, "-m", "worker.cli", "api", "--port", str(port)], env, log_dir)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.popen.poll() is None, proc.log()
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, f"{name} to answer")
    return proc, base


def test_idempotency_holds_across_two_api_processes(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = spdist_env(
        pg_url, redis_url, "http://127.0.0.1:9/pixelStripeApi", KEYS, SPDIST_API_TOKENS=TOKEN
    )
    (a, base_a), (b, base_b) = start_api(env, tmp_path, "api-a"), start_api(env, tmp_path, "api-b")
    try:
        h = {**AUTH, "Idempotency-Key": "raced"}

        def post(i: int) -> httpx.Response:
            return httpx.post(
                f"{(base_a, base_b)[i % 2]}/v1/distributions", json=body(3), headers=h, timeout=30
            )

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(post, range(16)))
        codes = sorted(r.status_code for r in answers)
        assert codes == [200] * 15 + [202], [r.text for r in answers]
        assert len({r.json()["id"] for r in answers}) == 1
    finally:
        a.stop()
        b.stop()


def test_send_task_enqueue(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    """A Celery service enqueues with send_task: the same validation, the same SQL record."""
    from celery import Celery

    from worker.dev.procs import start_worker

    env = spdist_env(pg_url, redis_url, "http://127.0.0.1:9/pixelStripeApi", KEYS)
    worker = start_worker("enq", env, tmp_path)
    producer = Celery(broker=redis_url)
    try:
        producer.send_task("spdist.enqueue", kwargs=body(5, priority=3), queue="spdist")
        producer.send_task("spdist.enqueue", kwargs=body(6, uploadId="nope"), queue="spdist")
        engine = make_engine(pg_url)

        def stored() -> list[DistributionRequest]:
            with sessionmaker(engine)() as session:
                return list(session.scalars(select(DistributionRequest)).all())

        rows = wait_for(stored, 30, "the enqueued request")
        wait_for(lambda: "uploadId must be 24 hexadecimal" in worker.log(), 30, "the refusal")
        assert isinstance(rows, list) and len(rows) == 1
        assert (rows[0].project_id, rows[0].priority) == (f"{5:024x}", 3)
        engine.dispose()
    finally:
        producer.close()
        worker.stop()


def test_cli_api_process_answers(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    env = spdist_env(
        pg_url, redis_url, "http://127.0.0.1:9/pixelStripeApi", KEYS, SPDIST_API_TOKENS=TOKEN
    )
    proc, base = start_api(env, tmp_path)
    try:
        assert httpx.get(f"{base}/readyz").json()["checks"] == {"database": "ok", "redis": "ok"}
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "spdist"
        r = httpx.post(f"{base}/v1/distributions", json=body(1), headers=AUTH)
        assert r.status_code == 202
        with redis.Redis.from_url(redis_url) as client:
            assert client.zcard(f"spdist:lane:{{{USER}}}:q") == 1
        got = httpx.get(f"{base}/v1/distributions/{r.json()['id']}", headers=AUTH)
        assert json.loads(got.text)["id"] == r.json()["id"]
    finally:
        proc.stop()
