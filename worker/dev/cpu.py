"""Machine CPU by part while a scenario runs, read from /proc: where each dispatch's cost goes.

The meter knows a few root processes (the worker nodes, beat, the PostgreSQL server, the
private Redis, the fake) and reads their descendants from /proc, so a sample costs a few dozen
small reads, not a scan of every process: every 0.5 s, utime + stime. A process that started
during the scenario counts from zero, one already running from its first sample, one that
exits up to its last sample. Linux only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

TICK = os.sysconf("SC_CLK_TCK")
EVERY_S = 0.5
PARTS = ("worker main", "worker pool", "beat", "PostgreSQL", "Redis", "fake Streampixel")


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(command name, parent pid, CPU seconds) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    close = raw.rindex(")")
    fields = raw[close + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    return raw[raw.index("(") + 1 : close], int(fields[1]), cpu


def postmaster() -> int | None:
    """The PostgreSQL server's main process: a `postgres` whose parent is not one."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _stat(int(entry))) and found[0] == "postgres":
            parent = _stat(found[1])
            if parent is None or parent[0] != "postgres":
                return int(entry)
    return None


def redis_pid(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


class CpuMeter:
    """CPU seconds per part. `roots`: pid -> (its part, its children's part or None)."""

    def __init__(self, roots: dict[int, tuple[str, str | None]]) -> None:
        self._roots = roots
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._sample(first=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self, first: bool = False) -> None:
        for root, (part, children_part) in self._roots.items():
            self._note(root, part, first)
            if children_part is not None:
                for child in descendants(root):
                    self._note(child, children_part, first)

    def _note(self, pid: int, part: str, first: bool) -> None:
        found = _stat(pid)
        if found is None:
            return
        self._first.setdefault(pid, found[2] if first else 0.0)
        self._last[pid] = (part, found[2])

    def _run(self) -> None:
        while not self._stop.wait(EVERY_S):
            self._sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds per part since the meter started."""
        self._stop.set()
        self._thread.join()
        self._sample()
        used: dict[str, float] = {}
        for pid, (part, cpu) in self._last.items():
            used[part] = used.get(part, 0.0) + cpu - self._first[pid]
        return {part: round(used[part], 3) for part in PARTS if part in used}


@contextmanager
def measure(
    mains: set[int], beat: int | None, redis_url: str, fake: int
) -> Iterator[dict[str, float]]:
    """CPU seconds per part while the block runs, in the dict it yields (filled at the end).
    `mains`: the worker nodes' main processes, already running; their children are the
    pool. The benchmark has the PostgreSQL server to itself: all of it is counted."""
    roots: dict[int, tuple[str, str | None]] = {m: ("worker main", "worker pool") for m in mains}
    if beat is not None:
        roots[beat] = ("beat", "beat")
    if (pg := postmaster()) is not None:
        roots[pg] = ("PostgreSQL", "PostgreSQL")
    roots[redis_pid(redis_url)] = ("Redis", None)
    roots[fake] = ("fake Streampixel", None)
    meter = CpuMeter(roots)
    used: dict[str, float] = {}
    try:
        yield used
    finally:
        used.update(meter.stop())


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children of each of its threads, recursively)."""
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except FileNotFoundError:
            continue
        children += [int(c) for c in text.split()]
    return children + [d for c in children for d in descendants(c)]
