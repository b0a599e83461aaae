"""The `spdist` console script as a user runs it: real processes, SQLite or Postgres, real Redis."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import USER_KEYS
from worker.dev.procs import PY, ROOT, spdist_env

pytestmark = pytest.mark.integration
USER = next(iter(USER_KEYS))
PROJECT, UPLOAD = "ab" * 12, "cd" * 12


def spdist(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "worker.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def env(db_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    # 1 hour: nothing is dispatched while the test looks at the lane.
    return spdist_env(
        db_url, redis_url, "http://127.0.0.1:9/x", USER_KEYS, SPDIST_MIN_INTERVAL_S="3600"
    )


def test_enqueue_show_ls_lanes_cancel_retry(env: dict[str, str]) -> None:
    first = spdist(env, "enqueue", "--user", USER, "--project", PROJECT, "--upload", UPLOAD)
    assert first.returncode == 0, first.stderr
    rid = first.stdout.strip()
    out = spdist(
        env,
        "enqueue",
        "--user",
        USER,
        "--project",
        "ef" * 12,
        "--upload",
        UPLOAD,
        "--priority",
        "5",
        "--json",
    )
    second = json.loads(out.stdout)
    assert second["state"] == "queued" and second["priority"] == 5 and second["position"] == 1
    shown = json.loads(spdist(env, "show", rid, "--json").stdout)
    assert (shown["id"], shown["position"], shown["attempts"]) == (rid, 2, [])
    listed = json.loads(spdist(env, "ls", "--user", USER, "--json").stdout)
    assert [d["id"] for d in listed] == [second["id"], rid]
    lanes = json.loads(spdist(env, "lanes", "--json").stdout)
    assert [i["id"] for i in lanes[0]["items"]] == [second["id"], rid]
    assert spdist(env, "cancel", rid).stdout.split() == [rid, "cancelled"]
    again = spdist(env, "cancel", rid)
    assert again.returncode == 1 and "not waiting" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    retry = spdist(env, "retry", second["id"])
    assert retry.returncode == 1 and "not failed or dead" in retry.stderr


def test_coalescing_from_the_command_line(env: dict[str, str]) -> None:
    old = spdist(env, "enqueue", "--user", USER, "--project", PROJECT, "--upload", UPLOAD)
    new = spdist(env, "enqueue", "--user", USER, "--project", PROJECT, "--upload", "ee" * 12)
    shown = json.loads(spdist(env, "show", old.stdout.strip(), "--json").stdout)
    assert shown["state"] == "superseded" and shown["supersededBy"] == new.stdout.strip()
    kept = spdist(
        env,
        "enqueue",
        "--user",
        USER,
        "--project",
        PROJECT,
        "--upload",
        "ff" * 12,
        "--no-coalesce",
        "--json",
    )
    assert json.loads(kept.stdout)["position"] == 2


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--user", "xyz", "--project", PROJECT, "--upload", UPLOAD], "userId must be 24"),
        (["--user", USER, "--project", PROJECT, "--upload", "zz" * 12], "uploadId must be 24"),
        (["--user", "9" * 24, "--project", PROJECT, "--upload", UPLOAD], "no API key"),
        (
            ["--user", USER, "--project", PROJECT, "--upload", UPLOAD, "--priority", "101"],
            "priority",
        ),
    ],
)
def test_bad_input_is_refused_with_one_line(
    env: dict[str, str], args: list[str], says: str
) -> None:
    result = spdist(env, "enqueue", *args)
    assert result.returncode == 1 and says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert json.loads(spdist(env, "ls", "--json").stdout) == []


def test_show_unknown_id_fails(env: dict[str, str]) -> None:
    result = spdist(env, "show", "0" * 32)
    assert result.returncode == 1 and "no distribution" in result.stderr


def test_migrate_command(env: dict[str, str]) -> None:
    result = spdist(env, "migrate")
    assert result.returncode == 0 and "latest migration" in result.stdout


def test_bad_configuration_is_one_line_without_the_value(env: dict[str, str]) -> None:
    env = dict(env, SPDIST_API_KEYS='{"' + USER + '": ["sk-leaky-secret"]}')
    result = spdist(env, "ls")
    assert result.returncode == 1 and "SPDIST_API_KEYS" in result.stderr
    assert "sk-leaky-secret" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
