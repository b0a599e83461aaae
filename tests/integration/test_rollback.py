"""Rollback against real Redis and Postgres (and SQLite): the project's previous upload that
reached Streampixel goes first in its lane, under the caller's name, saying what it undoes."""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from api.main import create_app
from tests.integration.test_api import close, make_ctx
from tests.integration.test_cli import spdist
from worker import distributions
from worker.context import Context
from worker.dev.procs import spdist_env
from worker.models import State, utcnow

with warnings.catch_warnings():  # starlette asks for httpx2; httpx serves the same
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration
USER = uuid.uuid4().hex[:24]
PROJECT, OTHER_PROJECT, EMPTY_PROJECT = "1a" * 12, "2b" * 12, "3c" * 12
A, B, C, D = ("a1" * 12, "b2" * 12, "c3" * 12, "d4" * 12)
CI = {"Authorization": "Bearer tok-ci"}


def history(ctx: Context, project: str, *calls: tuple[str, State]) -> list[str]:
    """Requests of `project` called one minute apart, oldest first, ending in these states."""
    ids, start = [], utcnow() - timedelta(hours=1)
    with ctx.sessions.begin() as session:
        for n, (upload, state) in enumerate(calls):
            new = distributions.validate(ctx, USER, project, upload, created_by="ci")
            values = distributions.new_values(new)
            at = start + timedelta(minutes=n)
            values.update(state=state, dispatched_at=at, created_at=at, attempt_count=1)
            ctx.ledger.insert_request(session.connection(), values)
            ids.append(values["id"])
    return ids


@pytest.fixture
def api(db_url: str, redis_url: str) -> Iterator[tuple[TestClient, Context]]:
    ctx = make_ctx(
        db_url,
        redis_url,
        [],
        api_keys={USER: "sk-rollback"},
        api_tokens="ci=tok-ci",
        min_interval_s=3600,
    )
    try:
        with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
            yield c, ctx
    finally:
        close(ctx)


def rollback(c: TestClient, project: str = PROJECT, **body: Any) -> Any:
    return c.post(f"/v1/projects/{project}/rollback", json=body or None, headers=CI)


def test_rollback_picks_the_previous_distributed_upload_and_goes_first(
    api: tuple[TestClient, Context],
) -> None:
    c, ctx = api
    ids = history(
        ctx,
        PROJECT,
        (A, State.CONFIRMED),
        (B, State.FAILED),
        (C, State.SUCCEEDED),
        (C, State.CONFIRMED),
    )
    other = {"userId": USER, "projectId": OTHER_PROJECT, "uploadId": D, "priority": 99}
    ahead = c.post("/v1/distributions", headers=CI, json=other).json()
    same = {"userId": USER, "projectId": PROJECT, "uploadId": D}
    waiting = c.post("/v1/distributions", headers=CI, json=same).json()
    r = rollback(c)
    new = r.json()
    assert r.status_code == 202, r.text
    assert (new["uploadId"], new["projectId"], new["userId"]) == (A, PROJECT, USER)
    assert (new["priority"], new["createdBy"], new["state"]) == (100, "ci", "queued")
    assert f"from upload {C} (distribution {ids[3]})" in new["message"]
    assert f"to upload {A} (distribution {ids[0]})" in new["message"]
    lane = c.get(f"/v1/users/{USER}/lane", headers=CI).json()
    assert [i["id"] for i in lane["items"]] == [new["id"], ahead["id"]]
    old = c.get(f"/v1/distributions/{waiting['id']}", headers=CI).json()
    assert (old["state"], old["supersededBy"]) == ("superseded", new["id"])


def test_rollback_to_a_named_upload(api: tuple[TestClient, Context]) -> None:
    c, ctx = api
    history(ctx, PROJECT, (A, State.SUCCEEDED), (B, State.CONFIRMED), (C, State.CONFIRMED))
    r = rollback(c, toUploadId=A.upper())
    assert r.status_code == 202 and r.json()["uploadId"] == A
    assert rollback(c).json()["uploadId"] == B  # the rollback itself has not reached Streampixel


def test_nothing_to_roll_back_to_is_404(api: tuple[TestClient, Context]) -> None:
    c, ctx = api
    history(
        ctx, PROJECT, (A, State.FAILED), (B, State.DEAD), (C, State.CONFIRMED), (C, State.SUCCEEDED)
    )
    for r in (
        rollback(c),
        rollback(c, EMPTY_PROJECT),
        rollback(c, toUploadId=A),
        rollback(c, toUploadId=D),
    ):
        assert r.status_code == 404 and r.json()["detail"], r.text
    assert c.get("/v1/distributions", headers=CI).json()["items"][0]["uploadId"] == C  # none new


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        (PROJECT, {"toUploadId": "zz" * 12}, "toUploadId"),
        (PROJECT, {"toUpload": A}, "toUpload"),
        ("not-a-project", None, "projectId"),
    ],
)
def test_bad_rollback_input_is_422(
    api: tuple[TestClient, Context], path: str, payload: Any, field: str
) -> None:
    c, _ = api
    r = c.post(f"/v1/projects/{path}/rollback", json=payload, headers=CI)
    assert r.status_code == 422 and field in json.dumps(r.json()), r.text


@pytest.fixture
def env(db_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return spdist_env(
        db_url,
        redis_url,
        "http://127.0.0.1:9/x",
        {USER: "sk-rollback-cli"},
        SPDIST_MIN_INTERVAL_S="3600",
    )


def test_rollback_from_the_command_line(env: dict[str, str]) -> None:
    assert spdist(env, "migrate").returncode == 0
    ctx = make_ctx(
        env["SPDIST_DATABASE_URL"], env["SPDIST_REDIS_URL"], [], api_keys={USER: "sk-rollback-cli"}
    )
    try:
        history(ctx, PROJECT, (A, State.CONFIRMED), (B, State.CONFIRMED), (C, State.SUCCEEDED))
    finally:
        close(ctx)
    out = spdist(env, "rollback", "--project", PROJECT, "--json")
    new = json.loads(out.stdout)
    assert (new["uploadId"], new["priority"], new["position"]) == (B, 100, 1), out.stderr
    named = spdist(env, "rollback", "--project", PROJECT, "--to", A)
    assert named.returncode == 0 and f"to upload {A}" in named.stdout
    missing = spdist(env, "rollback", "--project", EMPTY_PROJECT)
    assert missing.returncode == 1 and "no distributed upload" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
