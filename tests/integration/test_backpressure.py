"""SPDIST_MAX_WAITING_PER_USER on both enqueue paths: the thread's (SQLite) and the event
loop's batches (PostgreSQL), requests sent one by one and all at once."""

from __future__ import annotations

import concurrent.futures
import warnings
from collections.abc import Iterator

import pytest

from api.main import create_app
from tests.integration.test_api import AUTH, body, close, make_ctx

with warnings.catch_warnings():  # starlette asks for httpx2; httpx serves the same
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration
CAP = 3


@pytest.fixture
def client(db_url: str, redis_url: str) -> Iterator[TestClient]:
    ctx = make_ctx(db_url, redis_url, [], max_waiting_per_user=CAP)
    try:
        with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
            yield c
    finally:
        close(ctx)


def test_past_the_cap_is_429_with_retry_after(client: TestClient) -> None:
    codes = [
        client.post("/v1/distributions", json=body(n, coalesce=False), headers=AUTH)
        for n in range(CAP + 1)
    ]
    assert [r.status_code for r in codes] == [202] * CAP + [429]
    refused = codes[-1]
    assert "SPDIST_MAX_WAITING_PER_USER" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("coalesce", [True, False])  # PostgreSQL: the loop's batches, a thread
def test_a_burst_gets_no_more_than_the_cap(client: TestClient, coalesce: bool) -> None:
    def post(n: int) -> int:
        payload = body(n, coalesce=coalesce)
        return client.post("/v1/distributions", json=payload, headers=AUTH).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, range(12)))
    assert codes.count(202) == CAP and codes.count(429) == 12 - CAP
