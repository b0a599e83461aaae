"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
SPDIST = {"migrate", "api", "worker", "beat", "flower"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_are_all_there(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SPDIST | {"redis", "postgres"}


def test_every_spdist_command_parses(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name in SPDIST:
        service = compose["services"][name]
        args = parser.parse_args(service["command"])
        assert args.command == name and callable(args.fn)


def test_images_build_from_files_that_exist(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["spdist"\]', dockerfile, re.M)
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        for src in line.split()[:-1]:
            assert (ROOT / src).exists(), src
    for name in SPDIST:
        assert compose["services"][name]["build"] == "."


def test_redis_is_durable_and_never_evicts(compose: dict[str, Any]) -> None:
    cmd = compose["services"]["redis"]["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"


def test_healthchecks_and_ordering(compose: dict[str, Any]) -> None:
    s = compose["services"]
    for name in ("redis", "postgres", "api", "worker"):
        assert s[name]["healthcheck"]["test"], name
    assert "redis-cli" in s["redis"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(s["postgres"]["healthcheck"]["test"])
    assert s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker", "beat"):
        deps = s[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == deps["postgres"]["condition"] == "service_healthy"


def test_worker_scales_and_beat_is_one(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert compose["services"]["beat"]["deploy"]["replicas"] == 1


def test_secrets_are_required(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for var in (
        "POSTGRES_PASSWORD",
        "SPDIST_API_KEYS",
        "SPDIST_API_TOKENS",
        "SPDIST_WEBHOOK_TOKEN",
        "SPDIST_FLOWER_BASIC_AUTH",
    ):
        assert re.search(r"\$\{" + var + r":\?[^}]+\}", text), var
    assert "sk-" not in text


def test_workers_get_time_to_finish_a_call_on_sigterm(compose: dict[str, Any]) -> None:
    """`docker compose stop` sends SIGTERM, then SIGKILL after the grace period: that must
    cover a call in flight and its recording (the lease), or it ends as `unknown`."""
    from worker.settings import Settings

    grace = compose["services"]["worker"]["stop_grace_period"]
    match = re.fullmatch(r"(\d+)s", str(grace))
    assert match, grace
    assert int(match[1]) >= Settings().lease_s


def test_the_image_installs_the_locked_dependencies_only() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements/main.txt" in dockerfile
    assert re.search(r"^RUN pip install --no-deps \. ", dockerfile, re.M)
