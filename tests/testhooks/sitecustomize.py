"""Test-only process hooks, active when this folder is on PYTHONPATH (system tests only).

SPDIST_TEST_CLOCK_SKEW_S  shift this process's wall clock (time.time, time.time_ns,
                          datetime.now/utcnow/today) by that many seconds; monotonic clocks
                          and the Redis and Postgres servers' clocks are untouched.
SPDIST_TEST_LEASE_S       shorten the claim lease so a lease-expiry scenario fits in seconds.
"""

from __future__ import annotations

import datetime as _dt
import os
import time as _time

_SKEW = float(os.environ.get("SPDIST_TEST_CLOCK_SKEW_S") or 0)

if _SKEW:
    _real_time, _real_time_ns = _time.time, _time.time_ns
    _time.time = lambda: _real_time() + _SKEW  # type: ignore[assignment]
    _time.time_ns = lambda: _real_time_ns() + int(_SKEW * 1e9)  # type: ignore[assignment]

    class _SkewedDatetime(_dt.datetime):
        """datetime whose now() runs _SKEW seconds off."""

        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def,override]
            return cls.fromtimestamp(_time.time(), tz)

        @classmethod
        def utcnow(cls):  # type: ignore[no-untyped-def,override]
            return cls.fromtimestamp(_time.time(), _dt.UTC).replace(tzinfo=None)

        @classmethod
        def today(cls):  # type: ignore[no-untyped-def,override]
            return cls.fromtimestamp(_time.time())

    _dt.datetime = _SkewedDatetime  # type: ignore[misc]

_LEASE = os.environ.get("SPDIST_TEST_LEASE_S")
if _LEASE:
    from worker.settings import Settings

    Settings.lease_s = property(lambda self: float(_LEASE))  # type: ignore[assignment,method-assign]
