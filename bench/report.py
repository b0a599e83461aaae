"""The results as a table (stdout and docs/BENCHMARKS.md) and the pacing time line (PNG)."""
# ruff: noqa: E501

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    scenario: str
    metric: str
    spdist: str
    baseline: str
    goal: str
    met: bool | None  # None: no goal

    @property
    def verdict(self) -> str:
        return "—" if self.met is None else ("met" if self.met else "**MISSED**")


def _f(v: float, fmt: str = ".1f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def rows(results: dict[str, Any]) -> list[Row]:
    """One row per figure; goals judged here, and only here."""
    out: list[Row] = []
    if "pacing" in results:
        p, s, b = "1 pacing", results["pacing"]["spdist"], results["pacing"]["baseline"]
        out += [
            Row(
                p,
                "calls made (answered 200)",
                f"{s['calls']} ({s['ok']})",
                f"{b['calls']} ({b['ok']})",
                "",
                None,
            ),
            Row(
                p,
                "calls inside the interval",
                str(s["inside"]),
                str(b["inside"]),
                "0",
                s["inside"] == 0,
            ),
            Row(
                p,
                "slack, median (ms)",
                _f(s["slack_median_ms"]),
                _f(b["slack_median_ms"]),
                "≤ 20",
                s["slack_median_ms"] <= 20,
            ),
            Row(
                p,
                "slack, p99 (ms)",
                _f(s["slack_p99_ms"]),
                _f(b["slack_p99_ms"]),
                "≤ 100",
                s["slack_p99_ms"] <= 100,
            ),
            Row(
                p,
                "total ÷ ideal",
                _f(s["total_over_ideal"], ".3f"),
                _f(b["total_over_ideal"], ".3f"),
                "≤ 1.02",
                s["total_over_ideal"] <= 1.02,
            ),
            Row(
                p,
                "out of enqueue order",
                f"{_f(s['out_of_order'] * 100, '.0f')} %",
                f"{_f(b['out_of_order'] * 100, '.0f')} %",
                "",
                None,
            ),
            Row(
                p,
                "task executions per dispatch",
                _f(s["executions_per_dispatch"], ".2f"),
                _f(b["executions_per_dispatch"], ".2f"),
                "≤ 2",
                s["executions_per_dispatch"] <= 2,
            ),
            Row(
                p,
                "Redis commands per dispatch",
                _f(s["redis_per_dispatch"]),
                _f(b["redis_per_dispatch"]),
                "",
                None,
            ),
        ]
    if "door" in results:
        out += _door_rows(results["door"])
    if "throughput" in results:
        t = results["throughput"]
        base = t["baseline"]["rate"]
        for db in ("postgres", "sqlite"):
            if db in t:
                r = t[db]["rate"]
                out.append(
                    Row(
                        "2 throughput",
                        f"dispatches/s, {db}, {t[db]['calls']} calls (ratio)",
                        f"{_f(r)} ({_f(r / base, '.2f')})",
                        _f(base),
                        "≥ 0.5 × baseline",
                        r >= 0.5 * base,
                    )
                )
        if "cpu" in t.get("postgres", {}) and "cpu" in t["baseline"]:
            out.append(
                Row(
                    "2 throughput",
                    "machine CPU per dispatch, postgres (ms)",
                    _f(t["postgres"]["cpu"]["total_ms"], ".2f"),
                    _f(t["baseline"]["cpu"]["total_ms"], ".2f"),
                    "",
                    None,
                )
            )
        if "baseline_spdist_plumbing" in t:
            b2 = t["baseline_spdist_plumbing"]["rate"]
            r = t["postgres"]["rate"] if "postgres" in t else float("nan")
            out.append(
                Row(
                    "2 throughput",
                    "dispatches/s, bare task with spdist's Celery plumbing too (worker/broker.py, worker/consumer.py); spdist postgres ÷ it",
                    _f(r / b2, ".2f"),
                    f"{_f(b2)} ({_f(b2 / base, '.2f')} × baseline)",
                    "",
                    None,
                )
            )
        if "baseline_celery_defaults" in t:
            d = t["baseline_celery_defaults"]["rate"]
            out.append(
                Row(
                    "2 throughput",
                    "dispatches/s, bare task on Celery's defaults (early ack, prefetch 4, no events)",
                    "—",
                    f"{_f(d)} ({_f(d / base, '.2f')} × baseline)",
                    "",
                    None,
                )
            )
    if "api" in results:
        a, s, b = "3 enqueue API", results["api"]["spdist"], results["api"]["baseline"]
        out += [
            Row(
                a,
                "requests/s (ratio)",
                f"{_f(s['rps'])} ({_f(s['rps'] / b['rps'], '.2f')})",
                _f(b["rps"]),
                "≥ 0.5 × baseline",
                s["rps"] >= 0.5 * b["rps"],
            ),
            Row(a, "p99 latency (ms)", _f(s["p99_ms"]), _f(b["p99_ms"]), "≤ 50", s["p99_ms"] <= 50),
            Row(a, "errors", str(s["errors"]), str(b["errors"]), "", None),
        ]
    if "memory" in results:
        m = results["memory"]
        out.append(
            Row(
                "4 memory",
                f"worker RSS with {m['waiting']} waiting (MB)",
                f"{_f(m['loaded_mb'])} (+{_f(m['delta_mb'])})",
                f"{_f(m['idle_mb'])} idle",
                "≤ idle + 20",
                m["delta_mb"] <= 20,
            )
        )
    if "reconciler" in results:
        r = results["reconciler"]
        size = r["size"]
        out.append(
            Row(
                "5 reconciler",
                f"one pass, {size.requests:,} waiting in {size.lanes:,} lanes (ms)",
                f"{_f(r['first_s'] * 1000, '.0f')} (best {_f(r['best_s'] * 1000, '.0f')})",
                "—",
                "≤ 200",
                r["first_s"] <= 0.2,
            )
        )
    from bench import history_report

    out += history_report.rows(results)
    return out


def _door_rows(d: dict[str, Any]) -> list[Row]:
    """Each variant of the path to the door, beside the do-it-yourself lock."""
    b, out = d["diy lock"], []
    out.append(
        Row(
            "1b door",
            "DIY lock: calls inside · out of order · total ÷ ideal",
            "—",
            f"{b['inside']} · {_f(b['out_of_order'] * 100, '.0f')} % · {_f(b['total_over_ideal'], '.3f')}",
            "",
            None,
        )
    )
    for label in ("front 0-50 ms", "front 0-300 ms", "busy cores"):
        if label not in d:
            continue
        s, front = d[label], label.startswith("front")
        out += [
            Row(
                "1b door",
                f"{label}: calls inside the interval",
                str(s["inside"]),
                str(b["inside"]),
                "0",
                s["inside"] == 0,
            ),
            Row(
                "1b door",
                f"{label}: slack, median (ms)",
                _f(s["slack_median_ms"]),
                _f(b["slack_median_ms"]),
                "≤ 20" if front else "",
                s["slack_median_ms"] <= 20 if front else None,
            ),
            Row(
                "1b door",
                f"{label}: slack, p99 (ms)",
                _f(s["slack_p99_ms"]),
                _f(b["slack_p99_ms"]),
                "≤ 100" if front else "",
                s["slack_p99_ms"] <= 100 if front else None,
            ),
            Row(
                "1b door",
                f"{label}: out of enqueue order",
                f"{_f(s['out_of_order'] * 100, '.0f')} %",
                f"{_f(b['out_of_order'] * 100, '.0f')} %",
                "",
                None,
            ),
            Row(
                "1b door",
                f"{label}: total ÷ ideal",
                _f(s["total_over_ideal"], ".3f"),
                _f(b["total_over_ideal"], ".3f"),
                "",
                None,
            ),
        ]
    return out


def table(rs: list[Row]) -> str:
    """A Markdown table, readable as plain text too."""
    head = "| scenario | figure | spdist | baseline | goal | verdict |\n|---|---|---|---|---|---|\n"
    return head + "\n".join(
        f"| {r.scenario} | {r.metric} | {r.spdist} | {r.baseline} | {r.goal} | {r.verdict} |"
        for r in rs
    )


def plot(results: dict[str, Any], path: Path) -> None:
    """Each user's calls on a time line, spdist above the baseline; red marks a violation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pacing = results["pacing"]
    fig, axes = plt.subplots(2, 1, figsize=(11, 4.8), sharex=True)
    for ax, key, title in zip(
        axes,
        ("spdist", "baseline"),
        ("spdist (Lua pacer, per user)", "baseline: Celery rate_limit, per worker"),
        strict=True,
    ):
        line = pacing[key]["timeline"]
        t0 = min(m for _, m, _ in line)
        users = sorted({u for u, _, _ in line})
        for y, user in enumerate(users):
            ok = [m - t0 for u, m, v in line if u == user and not v]
            bad = [m - t0 for u, m, v in line if u == user and v]
            ax.scatter(ok, [y] * len(ok), marker="|", s=220, color="tab:blue")
            ax.scatter(bad, [y] * len(bad), marker="x", s=60, color="tab:red")
        ax.set_yticks(range(len(users)), [f"user …{u[-4:]}" for u in users])
        ax.set_ylim(-0.7, len(users) - 0.3)
        ax.set_title(
            f"{title}: {pacing[key]['inside']} inside the interval", fontsize=10, loc="left"
        )
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("seconds since the run's first call (arrival at the fake Streampixel)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
