"""api/shared_reading.py: one reading at a time, shared by those waiting, none older."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from api.shared_reading import SharedReading


class Readings:
    """A read that counts itself and, while `gate` is clear, blocks in its thread."""

    def __init__(self) -> None:
        self.started = 0
        self.running = 0
        self.most_at_once = 0
        self.gate = threading.Event()
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            self.started += 1
            n = self.started
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.gate.wait(5)
        with self.lock:
            self.running -= 1
        return n


async def _until(check: object) -> None:
    for _ in range(500):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


def test_callers_during_a_reading_share_the_next_one_and_none_gets_an_older_one() -> None:
    async def scenario() -> None:
        shared: SharedReading[int] = SharedReading()
        read = Readings()
        first = asyncio.create_task(shared.get("k", read))
        await _until(lambda: read.started == 1)
        later = [asyncio.create_task(shared.get("k", read)) for _ in range(8)]
        await asyncio.sleep(0.05)
        read.gate.set()
        assert await first == 1
        assert await asyncio.gather(*later) == [2] * 8  # begun after they came, one for all
        assert (read.started, read.most_at_once) == (2, 1)

    asyncio.run(scenario())


def test_a_reading_that_raises_raises_in_each_caller_and_the_next_call_reads_again() -> None:
    async def scenario() -> None:
        shared: SharedReading[int] = SharedReading()
        calls = []

        def read() -> int:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("database gone")
            return len(calls)

        got = await asyncio.gather(
            *(shared.get("k", read) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(g, RuntimeError) for g in got) and len(calls) == 1
        assert await shared.get("k", read) == 2

    asyncio.run(scenario())


def test_a_caller_that_goes_away_ends_no_reading_and_keys_are_apart() -> None:
    async def scenario() -> None:
        shared: SharedReading[int] = SharedReading()
        read, other = Readings(), Readings()
        other.gate.set()
        gone = asyncio.create_task(shared.get("k", read))
        await _until(lambda: read.started == 1)
        assert await shared.get("other", other) == 1  # another key does not wait for "k"
        gone.cancel()
        stays = asyncio.create_task(shared.get("k", read))
        await asyncio.sleep(0.05)
        read.gate.set()
        assert await stays == 2
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(scenario())


def test_after_overlapping_calls_the_next_reading_waits_its_rest() -> None:
    """Two calls shared a reading: the next begins no sooner than rest × its length after."""

    async def scenario() -> None:
        shared: SharedReading[int] = SharedReading(rest=3.0)
        spans: list[tuple[float, float]] = []

        def read() -> int:
            began = time.monotonic()
            time.sleep(0.05)
            spans.append((began, time.monotonic()))
            return len(spans)

        assert await asyncio.gather(shared.get("k", read), shared.get("k", read)) == [1, 1]
        assert await shared.get("k", read) == 2
        (b1, e1), (b2, _) = spans
        assert b2 - e1 >= 3.0 * (e1 - b1)

    asyncio.run(scenario())


def test_one_caller_at_a_time_never_waits_for_a_rest() -> None:
    """Calls one after another (a lone Prometheus) overlap nothing, so no rest: with a rest
    of 2,000 readings' lengths the second would wait over a minute."""

    async def scenario() -> None:
        shared: SharedReading[int] = SharedReading(rest=2000.0)
        n = [0]

        def read() -> int:
            time.sleep(0.05)
            n[0] += 1
            return n[0]

        assert await shared.get("k", read) == 1
        assert await asyncio.wait_for(shared.get("k", read), timeout=30) == 2

    asyncio.run(scenario())
