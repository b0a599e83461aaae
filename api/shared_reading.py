"""One reading at a time of something costly to read, shared by the callers that wait for it.

A `/metrics` scrape costs a few dozen milliseconds of SQL, Redis and text. Prometheus
servers, dashboards and people's `curl` loops scrape at once and as often as they like; each
scrape in its own thread of the API's pool made them contend with every other route for
the interpreter. Here a scrape waits, without holding a thread, for the next reading that
starts after it arrived, and every scrape waiting then gets that same reading: no answer is
older than its request, and however many scrape at once, one reading runs at a time; while
scrapes keep overlapping, each reading is followed by a rest (`rest` times as long as it
took), so readings keep to a share of the process and the other routes keep the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


@dataclass
class _Pending(Generic[T]):
    """The next reading's callers: their future, and how many they are."""

    future: asyncio.Future[T]
    callers: int = 0


class SharedReading(Generic[T]):
    """`await get(key, read)`: the result of a `read()` (in a worker thread) that began after
    the call; concurrent calls with the same key (on one event loop) share one. Once calls
    overlap (a reading shared, or one waiting when it ends), the next reading begins no
    sooner than `rest` times the last one's length after it: readings then take at most
    1 / (1 + rest) of the process, however many call; one caller alone never waits for a
    rest. A reading that raises raises in each of its callers."""

    def __init__(self, rest: float = 0.0) -> None:
        self._rest = rest
        self._next: dict[tuple[object, Hashable], _Pending[T]] = {}
        self._runs: dict[tuple[object, Hashable], asyncio.Task[None]] = {}
        self._calm: dict[tuple[object, Hashable], float] = {}  # no reading before (monotonic)

    async def get(self, key: Hashable, read: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        pending = self._next.get(slot)
        if pending is None:
            pending = self._next[slot] = _Pending(loop.create_future())
            if slot not in self._runs:
                self._runs[slot] = loop.create_task(self._run(slot, read))
        pending.callers += 1
        return await asyncio.shield(pending.future)  # a caller that goes away ends no reading

    async def _run(self, slot: tuple[object, Hashable], read: Callable[[], T]) -> None:
        """Readings while anyone waits, each for whoever arrived before it began."""
        now = time.monotonic()
        self._calm = {k: t for k, t in self._calm.items() if t > now}
        try:
            while slot in self._next:
                if (wait := self._calm.get(slot, 0.0) - time.monotonic()) > 0:
                    await asyncio.sleep(wait)  # callers meanwhile join this reading
                pending = self._next.pop(slot)
                began = time.monotonic()
                try:
                    pending.future.set_result(await run_in_threadpool(read))
                except Exception as exc:  # every caller of this reading gets it
                    pending.future.set_exception(exc)
                ended = time.monotonic()
                if pending.callers > 1 or slot in self._next:  # calls overlap: rest
                    self._calm[slot] = ended + self._rest * (ended - began)
        finally:
            del self._runs[slot]
