"""Run the benchmarks, print the table, write docs/BENCHMARKS.md and the time line PNG.

python -m bench.run                 # the full run (`make bench`)
python -m bench.run --smoke         # tiny sizes, seconds; what the test suite runs
python -m bench.run --only pacing,api --no-docs
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import api_load, door, history, memory, pacing, reconciler, report, throughput
from bench.common import Workspace
from bench.infra import private_redis

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("pacing", "door", "throughput", "api", "memory", "reconciler", "history")
FULL: dict[str, Any] = {
    "pacing": pacing.PacingSize(),
    "door": pacing.PacingSize(per_user=15),
    "throughput": throughput.ThroughputSize(),
    "api": api_load.ApiSize(),
    "memory": memory.MemorySize(),
    "reconciler": reconciler.ReconcilerSize(),
    "history": history.HistorySize(),
}
SMOKE: dict[str, Any] = {
    "pacing": pacing.PacingSize(users=2, per_user=3, projects=2, interval_s=0.5, nodes=1),
    "door": pacing.PacingSize(users=2, per_user=3, projects=2, interval_s=0.5, nodes=1),
    "throughput": throughput.ThroughputSize(requests=40, nodes=1, timeout_s=60),
    "api": api_load.ApiSize(concurrency=4, seconds=1.0, warmup_s=0.3, users=5),
    "memory": memory.MemorySize(requests=40, lanes=4, settle_s=1.0),
    "reconciler": reconciler.ReconcilerSize(requests=200, lanes=20, passes=1),
    "history": history.HistorySize(
        requests=3000,
        small=300,
        lanes=20,
        prune_rows=3000,
        samples=6,
        api=api_load.ApiSize(concurrency=4, seconds=1.0, warmup_s=0.3, users=5),
        dispatch=throughput.ThroughputSize(requests=40, nodes=1, timeout_s=60),
    ),
}
Runner = Callable[[Workspace, Any], dict[str, Any]]
RUNNERS: dict[str, Runner] = {
    "pacing": pacing.run,
    "door": door.run,
    "throughput": throughput.run,
    "api": api_load.run,
    "memory": memory.run,
    "history": history.run,
}


def run(only: list[str], smoke: bool, folder: Path) -> dict[str, Any]:
    """Each scenario in turn on one private Redis; a failing scenario is reported, not fatal."""
    sizes = SMOKE if smoke else FULL
    results: dict[str, Any] = {"errors": {}, "seconds": {}}
    with private_redis(folder) as redis_url:
        ws = Workspace(folder, redis_url)
        for name in only:
            t0 = time.monotonic()
            print(f"bench: {name} …", file=sys.stderr, flush=True)
            try:
                if name == "reconciler":
                    r = reconciler.run(ws, sizes[name], profile=not smoke)
                    if r["first_s"] <= 0.2:
                        r["profile"] = None
                    results[name] = r
                else:
                    results[name] = RUNNERS[name](ws, sizes[name])
            except Exception as exc:  # noqa: BLE001 - the report says which scenario broke
                results["errors"][name] = f"{type(exc).__name__}: {exc}"
                print(f"bench: {name} failed: {exc}", file=sys.stderr, flush=True)
            results["seconds"][name] = time.monotonic() - t0
    return results


def machine() -> str:
    def version(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=5).stdout.strip()
        except OSError:
            return "?"

    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{version(['redis-server', '--version']).split(' sha')[0]}, "
        f"{version(['psql', '--version'])}; load average at the end {load}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness works")
    p.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    p.add_argument("--no-docs", action="store_true", help="print only; leave docs/ alone")
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = p.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {sorted(unknown)}")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spdist-bench-") as tmp:
        results = run(only, args.smoke, Path(tmp))
    elapsed = time.monotonic() - t0
    rows = report.rows(results)
    print(report.table(rows))
    for name, err in results["errors"].items():
        print(f"{name}: FAILED — {err}")
    missed = [f"{r.scenario}: {r.metric}" for r in rows if r.met is False]
    took = ", ".join(f"{k} {v:.0f}" for k, v in results["seconds"].items())
    print(f"seconds per scenario: {took}")
    print(
        f"\n{len(rows)} figures, {sum(r.met is True for r in rows)} goals met, "
        f"{len(missed)} missed; {elapsed:.0f} s"
    )
    if not args.no_docs:
        from bench.doc import write

        write(args.docs, results, rows, elapsed, machine())
        print(f"wrote {args.docs / 'BENCHMARKS.md'}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
