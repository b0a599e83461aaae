"""ETAs on the Redis clock: the offset is measured, cached, kept on error, and applied."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from kombu.asynchronous.timer import to_timestamp

from worker import clock


class FakeRedisTime:
    """TIME answers this host's clock shifted by `ahead` seconds; can be made to fail."""

    def __init__(self, ahead: float) -> None:
        self.ahead, self.calls, self.down = ahead, 0, False

    def time(self) -> tuple[int, int]:
        self.calls += 1
        if self.down:
            raise redis.ConnectionError("down")
        t = time.time() + self.ahead
        return int(t), int((t % 1) * 1e6)


def test_offset_is_redis_minus_this_host() -> None:
    fake = FakeRedisTime(ahead=300.0)
    offset = clock.RedisClockOffset(lambda: fake)  # type: ignore[arg-type,return-value]
    assert offset() == pytest.approx(300.0, abs=0.05)


def test_offset_is_cached_then_remeasured() -> None:
    fake = FakeRedisTime(ahead=-300.0)
    offset = clock.RedisClockOffset(lambda: fake, ttl_s=0.05)  # type: ignore[arg-type,return-value]
    offset(), offset()
    assert fake.calls == 1
    time.sleep(0.06)
    fake.ahead = 10.0
    assert offset() == pytest.approx(10.0, abs=0.05)
    assert fake.calls == 2


def test_redis_down_keeps_the_last_offset() -> None:
    fake = FakeRedisTime(ahead=42.0)
    offset = clock.RedisClockOffset(lambda: fake, ttl_s=0.0)  # type: ignore[arg-type,return-value]
    assert offset() == pytest.approx(42.0, abs=0.05)
    fake.down = True
    assert offset() == pytest.approx(42.0, abs=0.05)


def test_eta_timestamp_moves_by_the_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    # This host is 300 s behind Redis: an ETA on Redis's clock is due 300 s sooner here.
    monkeypatch.setattr(clock, "offset", lambda: 300.0)
    eta = datetime.now(UTC) + timedelta(seconds=400)
    assert clock.redis_to_timestamp(eta) == pytest.approx(to_timestamp(eta) - 300.0, abs=0.01)
    assert clock.redis_to_timestamp(12.5) == 12.5  # already a timer timestamp


def test_strategy_hands_celery_the_redis_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_default(task: Any, app: Any, consumer: Any, **kw: Any) -> Any:
        def handler(*args: Any, to_timestamp: Any) -> str:
            seen.update(args=args, to_timestamp=to_timestamp)
            return "handled"

        return handler

    monkeypatch.setattr(clock, "default", fake_default)
    on_message = clock.strategy("task", "app", "consumer")
    assert on_message("m", "b", "ack", "reject", None) == "handled"
    assert seen == {
        "args": ("m", "b", "ack", "reject", None),
        "to_timestamp": clock.redis_to_timestamp,
    }


def test_tasks_with_etas_use_the_strategy() -> None:
    from worker.tasks import dispatch, webhook

    assert dispatch.Strategy == webhook.Strategy == "worker.clock:strategy"


def test_a_postponed_dispatch_retries_on_the_redis_clock() -> None:
    from types import SimpleNamespace

    from worker.errors import PacerUnavailable
    from worker.tasks import retry_eta

    redis_now = datetime.now(UTC) + timedelta(seconds=300)  # this host runs 5 min behind
    pacer = SimpleNamespace(now_us=lambda: int(redis_now.timestamp() * 1e6))
    eta = retry_eta(SimpleNamespace(pacer=pacer), 2.0)  # type: ignore[arg-type]
    assert abs((eta - redis_now).total_seconds() - 2.0) < 0.01

    def down() -> int:
        raise PacerUnavailable("down")

    eta = retry_eta(SimpleNamespace(pacer=SimpleNamespace(now_us=down)), 2.0)  # type: ignore[arg-type]
    assert abs((eta - datetime.now(UTC)).total_seconds() - 2.0) < 0.1
