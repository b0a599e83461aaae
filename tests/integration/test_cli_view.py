"""The command line for people: tables within 100 columns, short ids, relative times, watch."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess

import pytest

from tests.integration.test_cli import UPLOAD, USER, env, spdist
from worker.dev.procs import PY, ROOT, wait_for

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the fixture, imported for the tests below


def enqueue(env: dict[str, str], n: int) -> str:
    done = spdist(env, "enqueue", "--user", USER, "--project", f"{n:024x}", "--upload", UPLOAD)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_tables_fit_100_columns_and_short_ids_work(env: dict[str, str]) -> None:
    wide = {**env, "COLUMNS": "250"}
    assert spdist(wide, "ls").stdout.strip() == "no distributions match"
    ids = [enqueue(env, n) for n in range(1, 4)]
    listed = spdist(wide, "ls").stdout
    assert all(len(line) <= 100 for line in listed.splitlines()), listed
    assert all(i[:8] in listed for i in ids) and ids[0] not in listed
    assert "in 1 h" in listed and "ago" in listed
    lanes = spdist(wide, "lanes").stdout
    assert "one call per user every 3600" in lanes and all(
        len(x) <= 100 for x in lanes.splitlines()
    )
    shown = spdist(wide, "show", ids[1][:6])
    assert shown.returncode == 0 and ids[1] in shown.stdout and "no attempts yet" in shown.stdout
    assert spdist(env, "cancel", ids[2][:8]).stdout.split() == [ids[2], "cancelled"]
    short = spdist(env, "show", ids[0][:3])
    assert short.returncode == 1 and "too short" in short.stderr
    data = json.loads(spdist(env, "ls", "--json").stdout)
    assert [d["id"] for d in data] == ids[::-1] and data[1]["position"] == 2


def test_lanes_watch_redraws_until_ctrl_c(env: dict[str, str]) -> None:
    enqueue(env, 1)
    main, child = pty.openpty()  # a terminal: rich redraws in place only on one
    proc = subprocess.Popen(
        [PY, "-m", "worker.cli", "lanes", "--watch"],
        env=env,
        cwd=ROOT,
        stdout=child,
        stderr=child,
        start_new_session=True,
    )
    os.close(child)
    seen = bytearray()

    def drawn_twice() -> bool:
        seen.extend(os.read(main, 65536))
        return seen.count(b"one call per user") >= 2

    try:
        wait_for(drawn_twice, 30, "two draws of the lanes")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    assert USER.encode() in seen  # the lane's user is on screen
