"""The benchmark's CPU meter counts a process's children under their own part, including
one that exits before the meter stops."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from worker.dev.cpu import CpuMeter

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="Linux /proc")
BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_children_counted_under_their_part_even_after_they_exit() -> None:
    meter = CpuMeter({os.getpid(): ("worker main", "worker pool")})
    child = subprocess.Popen([sys.executable, "-c", BURN.format(s=1.0)])
    time.sleep(0.7)  # sampled at least once while it runs
    child.wait(30)
    used = meter.stop()
    assert 0.3 <= used["worker pool"] <= 1.2
    assert used["worker main"] < used["worker pool"]  # this process mostly slept


def test_a_process_already_running_counts_from_its_first_sample() -> None:
    script = BURN.format(s=0.6) + "print('burnt', flush=True)\ntime.sleep(30)\n"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "burnt\n"  # its burn is over before the meter starts
        meter = CpuMeter({child.pid: ("Redis", None)})
        time.sleep(0.6)
        assert meter.stop()["Redis"] < 0.1
    finally:
        child.kill()
        child.communicate()
