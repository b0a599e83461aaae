"""Fuzz the API from its own OpenAPI schema: no 5xx, no answer that breaks the schema."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

with warnings.catch_warnings():  # starlette asks for httpx2; httpx serves the same
    warnings.simplefilter("ignore", UserWarning)
    import schemathesis
    from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.unit.test_api import AUTH, Api

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> Api:
    return Api(Path(tmp_path_factory.mktemp("fuzz")))


def _schema(api: Api) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", api.client.app)


@pytest.mark.parametrize("with_token", [True, False])
def test_fuzz_every_operation(fuzz_api: Api, with_token: bool) -> None:
    schema = _schema(fuzz_api)
    headers = AUTH if with_token else {}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        run = _fuzz(operation, headers)
        try:
            run()
        except Exception as exc:  # collect, so one report lists every broken operation
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def _fuzz(operation: Any, headers: dict[str, str]) -> Any:
    from hypothesis import given

    @given(case=operation.as_strategy())
    @settings(
        max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case: Any) -> None:
        case.headers = {**(case.headers or {}), **headers}
        # Schema-valid ids may still be refused (422: no API key for that userId), so the
        # "valid data is accepted" check does not apply; every other check does.
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    return run


def test_fuzz_covers_every_route(fuzz_api: Api) -> None:
    labels = {r.ok().label for r in _schema(fuzz_api).get_all_operations()}
    routes = {
        f"{m} {r.path}"
        for r in fuzz_api.client.app.routes  # type: ignore[attr-defined]
        for m in getattr(r, "methods", ())
        if r.path.startswith(("/v1", "/healthz", "/readyz"))
    }
    assert routes <= labels, routes - labels


def test_fuzz_the_webhook_with_its_token(fuzz_api: Api) -> None:
    """With the right token the payload itself is fuzzed (a wrong one stops at 404)."""
    from hypothesis import given

    operation = next(
        r.ok()
        for r in _schema(fuzz_api).get_all_operations()
        if r.ok().path.startswith("/v1/webhooks")
    )

    @given(case=operation.as_strategy())
    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case: Any) -> None:
        case.path_parameters = {"token": "hook-secret"}
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    run()
