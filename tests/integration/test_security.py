"""Secrets stay secret: bearer and webhook tokens, and API keys nowhere to be found.

A real worker dispatches with a known API key against the fake Streampixel; then the
whole SQL database, every process's log, Flower's task API, Redis and every API answer
are searched for the key.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import MetaData, select

from tests.integration.test_api import TOKEN, start_api
from tests.integration.test_flower import FLOWER_AUTH, start_flower
from worker.db import make_engine
from worker.dev.procs import Proc, spdist_env, start_beat, start_fake, start_worker, wait_for

pytestmark = pytest.mark.integration
HOOK = "hook-" + uuid.uuid4().hex


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer  x",
        "Bearer wrong",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"{TOKEN}",
        "Bearer a,b",
        f"Bearer {TOKEN},{TOKEN}",
    ],
)
def test_bad_bearer_tokens_get_401(header: str | None, api_proc: str) -> None:
    headers = {} if header is None else {"Authorization": header}
    for path in ("/v1/distributions", f"/v1/users/{'0' * 24}/lane", "/v1/distributions/x"):
        r = httpx.get(f"{api_proc}{path}", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        assert TOKEN not in r.text


def test_webhook_token(api_proc: str) -> None:
    event = {"event": "webhook.test", "projectId": "a" * 24}
    for token in ("", "x", HOOK[:-1], HOOK + "x", HOOK.upper(), f"{HOOK}%00"):
        r = httpx.post(f"{api_proc}/v1/webhooks/streampixel/{token}", json=event)
        assert r.status_code in (404, 405), (token, r.status_code)
        assert HOOK not in r.text
    assert httpx.post(f"{api_proc}/v1/webhooks/streampixel/{HOOK}", json=event).status_code == 204


@pytest.fixture
def api_proc(pg_url: str, redis_url: str, tmp_path: Path) -> object:
    env = spdist_env(
        pg_url,
        redis_url,
        "http://127.0.0.1:9/pixelStripeApi",
        {},
        SPDIST_API_TOKENS=f"{TOKEN},second-token",
        SPDIST_WEBHOOK_TOKEN=HOOK,
    )
    proc, base = start_api(env, tmp_path)
    yield base
    proc.stop()


def test_api_keys_appear_nowhere(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    good_user, bad_user = uuid.uuid4().hex[:24], uuid.uuid4().hex[:24]
    key, wrong_key = f"sk-live-{uuid.uuid4().hex}", f"sk-stale-{uuid.uuid4().hex}"
    keys_file = tmp_path / "fake-keys.json"
    keys_file.write_text(json.dumps({good_user: key, bad_user: "the-real-one"}))
    procs: list[Proc] = []
    responses: list[str] = []
    try:
        fake, sp_url = start_fake(tmp_path, interval_s=0.5, keys_file=str(keys_file))
        procs.append(fake)
        env = spdist_env(
            pg_url,
            redis_url,
            sp_url,
            {good_user: key, bad_user: wrong_key},
            SPDIST_API_TOKENS=TOKEN,
            SPDIST_WEBHOOK_TOKEN=HOOK,
        )
        flower, fbase = start_flower(env, tmp_path)
        procs += [flower, start_worker("secw", env, tmp_path), start_beat(env, tmp_path)]
        api, base = start_api(env, tmp_path)
        procs.append(api)
        ids = _run_requests(base, good_user, bad_user, responses)
        wait_for(lambda: _states(base, ids) == ["succeeded", "failed"], 60, "both outcomes")
        _read_everything(base, ids, responses)
        flower_text = _flower_text(fbase, ids[0])
        haystacks = {
            "sql": _dump_sql(pg_url),
            "logs": "\n".join(p.log() for p in procs),
            "flower": flower_text,
            "redis": _dump_redis(redis_url),
            "api": "\n".join(responses),
        }
        for where, text in haystacks.items():
            for secret in (key, wrong_key, HOOK):
                assert secret not in text, f"a secret leaked into {where}"
        # We looked in the right places: the request is in the dump, the call in the logs.
        assert ids[0] in haystacks["sql"] and good_user in haystacks["flower"]
        assert "spdist.dispatch" in haystacks["logs"]
    finally:
        for p in procs:
            p.stop()


def _run_requests(base: str, good: str, bad: str, responses: list[str]) -> list[str]:
    ids = []
    for user in (good, bad):
        body = {"userId": user, "projectId": uuid.uuid4().hex[:24], "uploadId": "c" * 24}
        r = httpx.post(
            f"{base}/v1/distributions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        responses.append(r.text)
        ids.append(r.json()["id"])
    return ids


def _states(base: str, ids: list[str]) -> list[str]:
    h = {"Authorization": f"Bearer {TOKEN}"}
    return [httpx.get(f"{base}/v1/distributions/{i}", headers=h).json()["state"] for i in ids]


def _read_everything(base: str, ids: list[str], responses: list[str]) -> None:
    h = {"Authorization": f"Bearer {TOKEN}"}
    paths = [f"/v1/distributions/{i}" for i in ids] + [
        "/v1/distributions",
        "/metrics",
        "/readyz",
        "/healthz",
        "/openapi.json",
        "/v1/distributions/nope",
    ]
    responses += [httpx.get(base + p, headers=h).text for p in paths]
    responses += [httpx.post(f"{base}/v1/distributions/{i}/cancel", headers=h).text for i in ids]
    responses += [httpx.post(f"{base}/v1/distributions/{i}/retry", headers=h).text for i in ids]
    responses.append(httpx.post(f"{base}/v1/distributions", json={"apiKey": "x"}, headers=h).text)


def _flower_text(fbase: str, request_id: str) -> str:
    def seen() -> str | None:
        r = httpx.get(f"{fbase}/api/tasks", auth=FLOWER_AUTH, timeout=5)
        return r.text if request_id in r.text else None

    text = str(wait_for(seen, 30, "Flower to show the task"))
    workers = httpx.get(f"{fbase}/api/workers", auth=FLOWER_AUTH, timeout=15).text
    return text + workers


def _dump_sql(pg_url: str) -> str:
    dump = shutil.which("pg_dump")
    if dump:
        plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
        return subprocess.run([dump, plain], capture_output=True, text=True, check=True).stdout
    engine = make_engine(pg_url)
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        text = "\n".join(repr(row) for t in meta.sorted_tables for row in conn.execute(select(t)))
    engine.dispose()
    return text


def _dump_redis(url: str) -> str:
    out = []
    with redis.Redis.from_url(url) as client:
        for k in client.scan_iter(count=1000):
            kind = client.type(k)
            if kind == b"string":
                out.append(repr(client.get(k)))
            elif kind == b"list":
                out.append(repr(client.lrange(k, 0, -1)))
            elif kind == b"hash":
                out.append(repr(client.hgetall(k)))
            elif kind == b"zset":
                out.append(repr(client.zrange(k, 0, -1)))
            elif kind == b"set":
                out.append(repr(client.smembers(k)))
    return "\n".join(out)
