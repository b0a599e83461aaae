"""A host whose clock is off, for the system tests (active when this folder is on
PYTHONPATH): SPDIST_TEST_CLOCK_SKEW_S shifts this process's wall clock (time.time,
time.time_ns, datetime.now/utcnow/today) by that many seconds; monotonic clocks and the Redis
and Postgres servers' clocks are untouched.

It patches the interpreter, not spdist: a skewed host skews every library's clock (Celery's
ETA timer, kombu, the logging), which a seam in spdist's context could not reproduce. Every
other fault hook is a seam of the context (`worker.dev.faults.seams_from_env`).
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
