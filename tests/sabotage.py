# ruff: noqa: E501  (a table of exact source edits reads best one per line)
"""Remove one fault-handling mechanism at a time and check that its system test then fails.

    .venv/bin/python -m tests.sabotage            # every case (about 10 minutes)
    .venv/bin/python -m tests.sabotage postgres   # the cases whose name contains "postgres"
    SPDIST_SABOTAGE_KEEP=1 ...                    # keep each copy and its process logs

Each case copies the working tree to a temporary folder, edits the copy (each edit must
match exactly once, so a case cannot silently stop applying), runs the scenario's test
there, and expects it to FAIL. Nobody else ever runs the broken code. The table it prints
is the one in docs/RELIABILITY.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "tests/system"


@dataclass(frozen=True)
class Case:
    name: str
    removed: str
    test: str
    edits: tuple[tuple[str, str, str], ...]  # (file, old, new)


CASES = (
    Case("kill -9 pool child", "reconciler `expire_leases`",
         f"{SYSTEM}/test_processes.py::test_kill9_pool_child_mid_call",
         (("worker/reconcile.py", 'counts["leases_expired"] = expire_leases(ctx, now)',
           'counts["leases_expired"] = 0'),)),
    Case("kill -9 worker main", "reconciler `wake_lanes`",
         f"{SYSTEM}/test_processes.py::test_kill9_worker_main_process_mid_call",
         (("worker/reconcile.py", 'counts["lanes_woken"] = wake_lanes(ctx)',
           'counts["lanes_woken"] = 0'),)),
    Case("SIGTERM with tasks in flight",
         "warm shutdown (SIGTERM made a cold shutdown: `REMAP_SIGTERM=SIGQUIT`)",
         f"{SYSTEM}/test_processes.py::test_sigterm_with_tasks_in_flight",
         (("tests/system/conftest.py", '"PYTHONPATH": path}',
           '"PYTHONPATH": path, "REMAP_SIGTERM": "SIGQUIT"}'),)),
    Case("Redis FLUSHALL", "the SQL floor (0 instead, from `load` and from `_restore_lane`)",
         f"{SYSTEM}/test_redis.py::test_redis_flushall_mid_run",
         (("worker/dispatch.py", "    return floor\n", "    return 0\n"),
          ("worker/dispatch.py", "    floor = loaded.floor_us if loaded.alone else None\n",
           "    floor = 0 if loaded.alone else None\n"))),
    Case("Redis stopped and restarted empty",
         "the reconciler's refill of lanes Redis lost (`_refill`)",
         f"{SYSTEM}/test_redis.py::test_redis_down_10s_and_back_empty",
         (("worker/reconcile.py", "    if not user_ids:\n        return\n",
           "    if True:\n        return\n"),)),
    Case("outbox", "reconciler `publish_outbox`",
         f"{SYSTEM}/test_redis.py::test_outbox_publishes_what_was_accepted_without_redis",
         (("worker/reconcile.py", 'counts["published"] = publish_outbox(ctx)',
           'counts["published"] = 0'),)),
    Case("Postgres unreachable", "no call without a committed claim (a failed claim calls anyway)",
         f"{SYSTEM}/test_postgres.py::test_postgres_unreachable_10s",
         (("worker/dispatch.py",
           "    except SQLAlchemyError:\n        _release(ctx, req, ticket)\n        raise\n",
           "    except SQLAlchemyError:\n        number = req.attempt_count + 1\n"),)),
    Case("same message twice", "`_dispatchable` state check + claim fencing",
         f"{SYSTEM}/test_messages.py::test_same_message_published_twice",
         (("worker/dispatch.py", "    if req.state == State.QUEUED:\n        return True\n",
           "    if True:\n        return True\n"),
          ("worker/ledger.py", '        waiting(R.state),\n        R.attempt_count == bindparam("was"),\n'
           "    )\n    .values(\n        state=State.DISPATCHING,",
           "    )\n    .values(\n        state=State.DISPATCHING,"))),
    Case("unknown/deleted request", "`_drop_ghost` (lane entry of a deleted request)",
         f"{SYSTEM}/test_messages.py::test_message_for_unknown_or_deleted_request",
         (("worker/dispatch.py",
           "    ghosts = [m for m in ctx.pacer.members(user_id) if parse_member(m)[1] == request_id]\n",
           "    ghosts: list[str] = []\n"),)),
    Case("malformed message", "argument check in `spdist.dispatch`",
         f"{SYSTEM}/test_messages.py::test_malformed_messages",
         (("worker/tasks.py",
           "    if not isinstance(request_id, str) or not isinstance(due_us, int | None):\n",
           "    if False:\n"),)),
    Case("Streampixel faults (all 5)", "retry policy (every error ends the request as `failed`)",
         f"{SYSTEM}/test_streampixel.py",
         (("worker/outcomes.py",
           "        return Plan(**base, request_values=_to(State.SUCCEEDED, result.message))\n",
           "        return Plan(**base, request_values=_to(State.SUCCEEDED, result.message))\n"
           "    return Plan(**base, request_values=_to(State.FAILED, result.message))\n"),)),
    Case("worker clocks ±5 min", "lease on the Redis clock (written on the worker's clock)",
         f"{SYSTEM}/test_processes.py::test_worker_clocks_five_minutes_ahead_and_behind",
         (("worker/dispatch.py", "    lease = from_us(slot_us) + timedelta(seconds=s.lease_s)\n",
           "    lease = utcnow() + timedelta(seconds=s.lease_s)\n"),)),
    Case("retention: old waiting and in-flight requests", "prune's terminal-state condition",
         "tests/integration/test_history.py::test_prune_keeps_what_is_still_needed",
         (("worker/retention.py", "        R.state.in_([s.value for s in TERMINAL]),\n", ""),)),
    Case("retention: the pacing floor", "prune's keeping of each user's newest attempt",
         "tests/integration/test_history.py::test_prune_keeps_what_is_still_needed",
         (("worker/retention.py", "        ~holds_floor(),\n", ""),)),
)  # fmt: skip


def copy_tree(dest: Path) -> None:
    """The working tree as it is now (tracked and new files, not ignored ones)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.split("\n")  # fmt: skip
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def apply(dest: Path, edits: tuple[tuple[str, str, str], ...]) -> None:
    for rel, old, new in edits:
        path = dest / rel
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"{rel}: the edit no longer matches exactly once: {old!r}")
        path.write_text(text.replace(old, new))


def run(case: Case) -> tuple[bool, str]:
    """(failed as it should, why)."""
    dest = Path(tempfile.mkdtemp(prefix="spdist-sabotage-"))
    try:
        copy_tree(dest)
        apply(dest, case.edits)
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                f"--basetemp={dest / 'tmp'}", case.test]  # fmt: skip
        done = subprocess.run(argv, cwd=dest, capture_output=True, text=True)
    finally:
        if os.environ.get("SPDIST_SABOTAGE_KEEP"):
            print(f"kept {dest} (process logs under tmp/)", file=sys.stderr)
        else:
            shutil.rmtree(dest, ignore_errors=True)
    out = done.stdout + done.stderr
    summary = (re.findall(r"^(\d+ (?:failed|passed).*) in [\d.]+s", out, re.M) or [out[-200:]])[-1]
    reasons = re.findall(r"^E\s+(\w+Error: .*)$", out, re.M)
    why = f"{summary}; {reasons[0][:160]}" if reasons else summary
    return done.returncode == 1, why


def main(argv: list[str]) -> int:
    chosen = [c for c in CASES if not argv or any(a.lower() in c.name.lower() for a in argv)]
    rows, ok = [], True
    for case in chosen:
        failed, why = run(case)
        ok &= failed
        verdict = "**fails**" if failed else "STILL PASSES"
        rows.append(f"| {case.name} | {case.removed} | {verdict}: {why} |")
        print(rows[-1], flush=True)
    print("\n| scenario | mechanism removed | result |\n|---|---|---|")
    print("\n".join(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
