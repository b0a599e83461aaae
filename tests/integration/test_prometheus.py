"""deploy/: the alert rules under the real promtool, and a real Prometheus scraping a real API.

Debian's `prometheus` package gives both binaries (`./dev test` installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_api import TOKEN, free_port, start_api
from worker.dev.procs import (
    ROOT,
    Proc,
    running,
    spdist_env,
    start_beat,
    start_fake,
    start_worker,
    wait_for,
)

pytestmark = pytest.mark.integration
RULES = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "spdist.json"
SERIES = re.compile(r"\bspdist_[a-z0-9_]+")


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{binary} is missing (./dev test installs Debian's prometheus)")
    pytest.skip(f"{binary} is missing")


def test_promtool_checks_and_tests_the_alert_rules() -> None:
    promtool = _need("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", "alerts.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and "4 rules found" in check.stdout, check.stdout + check.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def _dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def _used_series() -> set[str]:
    text = "\n".join(_dashboard_exprs()) + (RULES / "alerts.yml").read_text()
    return set(SERIES.findall(text))


def _prometheus(tmp_path: Path, api_base: str) -> tuple[Proc, str]:
    """A Prometheus of its own: free port, own data folder, 1 s scrapes, our rules loaded."""
    binary = _need("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES / "alerts.yml")],
                "scrape_configs": [
                    {
                        "job_name": "spdist",
                        "static_configs": [{"targets": [api_base.split("//")[1]]}],
                    }
                ],
            }
        )
    )
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return Proc("prometheus", argv, dict(os.environ), tmp_path), f"http://127.0.0.1:{port}"


def _query(prom: str, expr: str) -> dict[str, Any]:
    try:
        r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5)
    except httpx.HTTPError:
        return {}
    return dict(r.json()) if r.status_code in (200, 400, 422) else {}


def _names(prom: str) -> set[str]:
    try:
        r = httpx.get(f"{prom}/api/v1/label/__name__/values", timeout=5)
    except httpx.HTTPError:
        return set()
    return set(r.json().get("data", [])) if r.status_code == 200 else set()


def test_prometheus_scrapes_the_api(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    user = uuid.uuid4().hex[:24]
    fake, sp_url = start_fake(tmp_path, interval_s=0.5)
    env = spdist_env(
        pg_url,
        redis_url,
        sp_url,
        {user: "sk-prom-" + uuid.uuid4().hex},
        SPDIST_API_TOKENS=TOKEN,
        SPDIST_MIN_INTERVAL_S="3600",
    )
    with running(fake):
        worker, beat = start_worker("promw", env, tmp_path), start_beat(env, tmp_path)
        api, base = start_api(env, tmp_path)
        prom, prom_base = _prometheus(tmp_path, base)
        with running(worker, beat, api, prom):
            for n in range(2):  # the first goes at once; the second waits an hour, ready
                body = {"userId": user, "projectId": f"{n:024x}", "uploadId": f"{n + 7:024x}"}
                r = httpx.post(
                    f"{base}/v1/distributions",
                    json=body,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                assert r.status_code == 202, r.text
            ready = f'spdist_lane_ready{{user_id="{user}"}}'
            found = wait_for(
                lambda: _query(prom_base, ready).get("data", {}).get("result"),
                60,
                "Prometheus to return our lane's series",
            )
            assert isinstance(found, list) and found[0]["value"][1] == "1"
            wanted = _used_series()
            wait_for(lambda: wanted <= _names(prom_base), 30, f"every series of {wanted}")
            for expr in _dashboard_exprs():
                assert _query(prom_base, expr).get("status") == "success", expr
            rules = httpx.get(f"{prom_base}/api/v1/rules", timeout=5).json()["data"]["groups"]
            assert {r["name"] for g in rules for r in g["rules"]} >= {
                "SpdistLaneStalled",
                "SpdistRequestsDead",
                "SpdistRateLimited",
                "SpdistSchedulerNotRunning",
            }
