"""Test-only process hooks, active when this folder is on PYTHONPATH (system tests only).

SPDIST_TEST_CLOCK_SKEW_S  shift this process's wall clock (time.time, time.time_ns,
                          datetime.now/utcnow/today) by that many seconds; monotonic clocks
                          and the Redis and Postgres servers' clocks are untouched.
SPDIST_TEST_LEASE_S       shorten the claim lease so a lease-expiry scenario fits in seconds.
SPDIST_TEST_CLAIM_GATE    stop one claim just before its SQL (see below).
SPDIST_TEST_SEND_GATE     stop one call between taking its slot and sending (see below).
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

_GATE = os.environ.get("SPDIST_TEST_CLAIM_GATE")
if _GATE:
    # SPDIST_TEST_CLAIM_GATE=dir: the first claim for the upload named in dir/upload stops
    # between the reservation and the claim's SQL: it creates dir/at-claim and waits for
    # dir/go, so a test can cut the database at exactly that point.
    from pathlib import Path as _Path

    import worker.ledger as _ledger

    _real_claim = _ledger.claim

    def _gated_claim(conn, req, *args, **kwargs):  # type: ignore[no-untyped-def]
        gate = _Path(_GATE)
        target = gate / "upload"
        if target.exists() and target.read_text().strip() == req.upload_id:
            try:
                os.close(os.open(gate / "at-claim", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass  # another attempt already stopped here once
            else:
                deadline = _time.monotonic() + 30
                while not (gate / "go").exists() and _time.monotonic() < deadline:
                    _time.sleep(0.005)
        return _real_claim(conn, req, *args, **kwargs)

    _ledger.claim = _gated_claim

_SEND_GATE = os.environ.get("SPDIST_TEST_SEND_GATE")
if _SEND_GATE:
    # SPDIST_TEST_SEND_GATE=dir: the first call for the upload named in dir/upload, once it
    # has fired (taken its slot), writes its pid to dir/at-send and waits for dir/go before
    # it sends, so a test can SIGSTOP the process at exactly that point.
    from pathlib import Path as _Path

    import worker.pacer as _pacer

    _real_fire = _pacer.Pacer.fire

    def _gated_fire(self, user_id, member, token):  # type: ignore[no-untyped-def]
        reply = _real_fire(self, user_id, member, token)
        gate = _Path(_SEND_GATE)
        target = gate / "upload"
        chosen = target.exists() and member.endswith(target.read_text().strip())
        if reply.kind == "fired" and chosen:
            try:
                fd = os.open(gate / "at-send", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return reply
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            deadline = _time.monotonic() + 30
            while not (gate / "go").exists() and _time.monotonic() < deadline:
                _time.sleep(0.001)
        return reply

    _pacer.Pacer.fire = _gated_fire  # type: ignore[method-assign]
