"""Issue 12's cases at the API edge: callers, back-pressure, one validator, auth first."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import DataError

from tests.unit.test_api import PROJECT, UPLOAD, USER, Api, body
from worker import callers, cli, distributions
from worker.settings import Settings

CI, OPS, BARE = "tok-ci-1", "tok-ops-1", "tok-bare-1"
TOKENS = f"ci={CI},ops={OPS},{BARE}"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path, api_tokens=TOKENS, operators="ops", max_waiting_per_user=3)
    with a.client:
        yield a


def post(api: Api, token: str, payload: dict[str, Any], **headers: str) -> Any:
    return api.client.post("/v1/distributions", json=payload, headers={**auth(token), **headers})


def test_created_by_names_the_caller_and_a_bare_token_gets_a_name(api: Api) -> None:
    assert post(api, CI, body()).json()["createdBy"] == "ci"
    bare = post(api, BARE, body(uploadId="d" * 24)).json()["createdBy"]
    assert bare == callers.bare_name(BARE) and BARE not in bare and bare.startswith("token-")
    listed = api.client.get("/v1/distributions", headers=auth(CI)).json()["items"]
    assert {i["createdBy"] for i in listed} == {"ci", bare}


def test_idempotency_key_belongs_to_its_caller(api: Api) -> None:
    first = post(api, CI, body(), **{"Idempotency-Key": "build-1"})
    other = post(api, OPS, body(), **{"Idempotency-Key": "build-1"})
    assert first.status_code == other.status_code == 202
    assert first.json()["id"] != other.json()["id"]
    changed = post(api, BARE, body(priority=5), **{"Idempotency-Key": "build-1"})
    assert changed.status_code == 202  # not "the key is in use": it is another caller's
    again = post(api, CI, body(), **{"Idempotency-Key": "build-1  "})  # spaces: the same key
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_only_the_creator_or_an_operator_may_act(api: Api, action: str) -> None:
    from worker.models import State

    rids = [post(api, CI, body(uploadId=f"{n:024x}", coalesce=False)).json()["id"] for n in (1, 2)]
    if action == "retry":
        for rid in rids:
            api.set_state(rid, State.FAILED)
    url = "/v1/distributions/{}/" + action
    refused = api.client.post(url.format(rids[0]), headers=auth(BARE))
    assert refused.status_code == 403 and "operator" in refused.json()["detail"]
    assert api.client.post(url.format(rids[0]), headers=auth(CI)).status_code in (200, 202)
    assert api.client.post(url.format(rids[1]), headers=auth(OPS)).status_code in (200, 202)


def test_back_pressure_past_the_cap(api: Api) -> None:
    for n in range(3):
        assert post(api, CI, body(uploadId=f"{n:024x}", coalesce=False)).status_code == 202
    refused = post(api, CI, body(uploadId="f" * 24, coalesce=False))
    assert refused.status_code == 429
    assert "SPDIST_MAX_WAITING_PER_USER=3" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) >= 1


def test_lane_pages_and_counts(api: Api) -> None:
    for n in range(3):
        post(api, CI, body(uploadId=f"{n:024x}", coalesce=False))
    url = f"/v1/users/{USER}/lane"
    page = api.client.get(url, params={"limit": 2}, headers=auth(CI)).json()
    assert page["waiting"] == 3 and len(page["items"]) == 2 and page["nextCursor"]
    rest = api.client.get(url, params={"limit": 2, "cursor": page["nextCursor"]}, headers=auth(CI))
    assert [i["position"] for i in rest.json()["items"]] == [3] and rest.json()[
        "nextCursor"
    ] is None
    bad = api.client.get(url, params={"cursor": "bm9wZQ"}, headers=auth(CI))
    assert bad.status_code == 422 and bad.json()["field"] == "cursor"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"coalesce": "false"}, "coalesce"),  # bool("false") is True
        ({"uploadId": UPLOAD + "\n"}, "uploadId"),  # `$` matches before a trailing newline
        ({"projectId": PROJECT[:-1] + "\x00"}, "projectId"),
        ({"priority": 10**30}, "priority"),
        ({"idempotencyKey": "k" * 256}, "idempotencyKey"),
        ({"idempotencyKey": "k\x00"}, "idempotencyKey"),
        ({"idempotencyKey": "   "}, "idempotencyKey"),
    ],
)
def test_one_verdict_for_the_api_the_task_and_the_cli(
    api: Api, override: dict[str, Any], field: str
) -> None:
    payload = {**body(), **override}
    task = distributions.enqueue_message(api.ctx, payload)
    assert task.get("field") == field and "error" in task, task
    key = payload.pop("idempotencyKey", None)
    headers = {"Idempotency-Key": key} if key is not None and "\x00" not in key else {}
    answer = post(api, CI, payload, **headers)
    if headers or "idempotencyKey" not in override:
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] in (field, "Idempotency-Key")
    with pytest.raises(Exception) as refused:  # the CLI's path: validate, then the key
        new = distributions.validate(
            api.ctx,
            payload["userId"],
            payload["projectId"],
            payload["uploadId"],
            payload.get("priority", 0),
            payload.get("coalesce", True),
        )
        from worker import validation

        validation.idempotency_key(key, field="idempotencyKey") if key is not None else None
        assert new is None
    assert getattr(refused.value, "field", None) in (field, "idempotencyKey")


def test_the_task_takes_created_by(api: Api) -> None:
    made = distributions.enqueue_message(api.ctx, {**body(), "createdBy": "pipeline"})
    shown = api.client.get(f"/v1/distributions/{made['id']}", headers=auth(CI)).json()
    assert shown["createdBy"] == "pipeline"
    spoof = distributions.enqueue_message(api.ctx, {**body(), "createdBy": callers.AUTO})
    assert spoof["field"] == "createdBy"


def test_cli_reason_is_one_line_without_sql() -> None:
    exc = DataError(
        "INSERT INTO distribution_requests (id) VALUES (%(id)s)",
        {"id": "x"},
        ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
    )
    line = cli.one_line(exc)
    assert "INSERT" not in line and "[SQL" not in line and "\n" not in line
    assert "NUL" in line


def test_auth_comes_before_the_body(api: Api) -> None:
    raw = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    assert api.client.post("/v1/distributions", **raw).status_code == 401  # type: ignore[arg-type]
    wrong = api.client.post("/v1/webhooks/streampixel/wrong", **raw)  # type: ignore[arg-type]
    assert wrong.status_code == 404
    right = api.client.post("/v1/webhooks/streampixel/hook-secret", **raw)  # type: ignore[arg-type]
    assert right.status_code == 422


def test_webhook_fields_with_nul_or_lone_surrogates_are_refused(api: Api) -> None:
    for value in ("build.distributing\x00", "\ud800"):
        raw = json.dumps({"event": "webhook.test", "status": value, "x": {"y": value}})
        r = api.client.post(
            "/v1/webhooks/streampixel/hook-secret",
            content=raw,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 422 and r.json()["field"] == "status", r.text


def test_settings_are_checked_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Settings(streampixel_url="api.streampixel.io/pixelStripeApi")
    with pytest.raises(ValueError, match="entry 2"):
        _ = Settings(api_tokens="ci=a,bad name=b").callers
    assert Settings(api_tokens=None).start_problems()[1] == [
        "SPDIST_API_TOKENS is not set: every /v1 route answers 401"
    ]
    from worker.settings import get_settings

    monkeypatch.setenv("SPDIST_STREAMPIXEL_URL", "ftp://nowhere")
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as stopped:
            cli.main(["api"])
    finally:
        get_settings.cache_clear()
    assert stopped.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "SPDIST_STREAMPIXEL_URL" in err and len(err.splitlines()) == 1


def test_flower_binds_loopback_and_warns_without_auth(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from worker.celery_app import app
    from worker.dev import stack
    from worker.settings import get_settings

    started: list[list[str]] = []
    monkeypatch.setattr(app, "start", lambda argv: started.append(argv))
    monkeypatch.delenv("SPDIST_FLOWER_ADDRESS", raising=False)
    monkeypatch.delenv("SPDIST_FLOWER_BASIC_AUTH", raising=False)
    get_settings.cache_clear()
    try:
        stack.flower(argparse.Namespace(port=5599, address=None))
    finally:
        get_settings.cache_clear()
    assert "--address=127.0.0.1" in started[0]
    assert "no authentication" in capsys.readouterr().err


def test_the_cli_records_its_name(
    api: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import text

    monkeypatch.setattr(cli, "_ctx", lambda: api.ctx)
    monkeypatch.setattr(cli, "_check_start", lambda command: None)
    with pytest.raises(SystemExit) as done:
        cli.main(["enqueue", "--user", USER, "--project", PROJECT, "--upload", UPLOAD])
    assert done.value.code == 0
    rid = capsys.readouterr().out.strip()
    with api.ctx.sessions() as session:
        sql = "SELECT created_by FROM distribution_requests WHERE id = :id"
        assert session.execute(text(sql), {"id": rid}).scalar() == callers.CLI
