"""Schemathesis over every route on PostgreSQL, which refuses what SQLite stores (a NUL in
text): no 5xx, no answer that breaks the schema. The webhook is fuzzed with its token."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from api.main import create_app
from tests.integration.test_api import AUTH, close, make_ctx

with warnings.catch_warnings():  # starlette asks for httpx2; httpx serves the same
    warnings.simplefilter("ignore", UserWarning)
    import schemathesis
    from fastapi.testclient import TestClient
    from schemathesis.specs.openapi.checks import positive_data_acceptance

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::UserWarning")]
HOOK = "hook-fuzz"


@pytest.fixture
def app(pg_url: str, redis_url: str) -> Iterator[Any]:
    ctx = make_ctx(pg_url, redis_url, [], webhook_token=HOOK)
    application = create_app(ctx, send_webhook_event=lambda *a: None)
    try:
        with TestClient(application):  # the lifespan: the event loop's enqueue path
            yield application
    finally:
        close(ctx)


def test_fuzz_every_route_on_postgres(app: Any) -> None:
    schema: Any = schemathesis.openapi.from_asgi("/openapi.json", app)  # as the unit test's
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        try:
            _run(operation)
        except Exception as exc:  # collect, so one report lists every broken operation
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def _run(operation: Any) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case: Any) -> None:
        case.headers = {**(case.headers or {}), **AUTH}
        if operation.path.startswith("/v1/webhooks"):
            case.path_parameters = {"token": HOOK}
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    run()
