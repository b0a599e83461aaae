"""The benchmark harness at tiny sizes, so `make bench` never rots (the full run is not a test)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke_run_prints_every_figure(tmp_path: Path) -> None:
    need("127.0.0.1", 5432, "PostgreSQL")
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPDIST_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--docs", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for scenario in (
        "1 pacing",
        "2 throughput",
        "3 enqueue API",
        "4 memory",
        "5 reconciler",
        "6 history",
    ):
        assert f"| {scenario} |" in done.stdout
    assert "calls inside the interval | 0 |" in done.stdout
    assert "| 2 throughput | machine CPU per dispatch, postgres (ms) |" in done.stdout
    assert "| 2 throughput | dispatches/s, bare task with spdist's Celery plumbing" in done.stdout
    assert "| 6 history | /metrics scrape on the history (ms) |" in done.stdout
    assert "| 6 history | prune of " in done.stdout
    doc = (tmp_path / "BENCHMARKS.md").read_text()
    assert "6. **History.**" in doc
    assert "| scenario | figure | spdist | baseline | goal | verdict |" in doc
    assert "Machine CPU per call" in doc and "worker pool" in doc
    assert (tmp_path / "bench-timeline.png").stat().st_size > 1000
