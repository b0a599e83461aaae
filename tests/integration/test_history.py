"""History: /metrics counts kept by triggers agree with a full scan, a token guards the
scrape, retention deletes only what nobody needs, lanes come in one batch."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from api.main import create_app
from tests.integration.test_api import TestClient, close, make_ctx
from worker import retention, tallies, views
from worker.context import Context
from worker.ledger import ATTEMPTS, REQUESTS
from worker.models import (
    CallbackDelivery,
    DistributionAttempt,
    DistributionRequest,
    MetricDelta,
    PacingFence,
    State,
    WebhookEvent,
    new_id,
    utcnow,
)

pytestmark = pytest.mark.integration
USERS = ["a" * 24, "b" * 24, "c" * 24]
PROJECT = "d" * 24
OLD = utcnow() - timedelta(days=40)


def add_request(
    ctx: Context,
    user: str,
    state: str,
    *,
    at: Any = OLD,
    attempts: int = 0,
    outcome: str | None = "rate_limited",
    free_us: int = 1,
) -> str:
    """A request of `user` in `state`, created and changed at `at`, with `attempts` calls."""
    rid = new_id()
    with ctx.sessions() as s, s.begin():
        s.execute(
            insert(REQUESTS).values(
                id=rid,
                user_id=user,
                project_id=PROJECT,
                upload_id="e" * 24,
                priority=0,
                seq=int(at.timestamp() * 1e6),
                coalesce=False,
                state=state,
                created_at=at,
                updated_at=at,
                attempt_count=attempts,
                failures=0,
            )
        )
        for n in range(1, attempts + 1):
            s.execute(
                insert(ATTEMPTS).values(
                    request_id=rid,
                    number=n,
                    user_id=user,
                    started_at=at + timedelta(seconds=7 * n),
                    slot_us=1,
                    lane_free_us=free_us + n,
                    outcome=outcome,
                    finished_at=at,
                )
            )
        if attempts:  # the user's pacing fence, as the claims and records would leave it
            fence = s.get(PacingFence, user)
            last = free_us + attempts
            if fence is None:
                s.add(PacingFence(user_id=user, not_before_us=last, updated_at=at))
            else:
                fence.not_before_us = max(fence.not_before_us, last)
    return rid


def full_scan(ctx: Context) -> dict[tuple[str, str], int]:
    """The counts the old scrape computed from the whole tables."""
    r, a = DistributionRequest, DistributionAttempt
    with ctx.sessions() as s:
        out = {
            ("requests", st): n
            for st, n in s.execute(select(r.state, func.count()).group_by(r.state))
        }
        out.update(
            {
                ("attempts", o or "in_flight"): n
                for o, n in s.execute(select(a.outcome, func.count()).group_by(a.outcome))
            }
        )
    return out


def tallied(ctx: Context, *, fold: bool) -> dict[tuple[str, str], int]:
    with ctx.sessions() as s:
        if fold:
            tallies.compact(ctx.ledger, s.connection())
            s.commit()
        got = tallies.read(s.connection())
    return {k: t.n for k, t in got.items() if k[0] != "delay" and t.n}


@pytest.fixture
def ctx(db_url: str, redis_url: str) -> Any:
    context = make_ctx(db_url, redis_url, [])
    yield context
    close(context)


def dispatch_once(ctx: Context, rid: str, outcome: str = "triggered") -> None:
    """Claim, then record an answer, through the dispatch's own statements."""
    engine = ctx.autocommit
    with engine.connect() as conn:
        loaded = ctx.ledger.load(conn, rid)
        assert loaded is not None
        now = utcnow()
        lease = now + timedelta(seconds=60)
        slot = loaded.floor_us  # the user's pacing fence lets this slot through
        attempt = {"slot_us": slot, "lane_free_us": slot + 1, "worker": "t"}
        number = ctx.ledger.claim(conn, loaded.request, now, lease, attempt)
        assert isinstance(number, int)
        moved = {"state": State.SUCCEEDED, "last_message": None, "next_attempt_at": None}
        done = {"http_status": 200, "outcome": outcome, "message": "ok", "lane_free_us": slot + 1}
        assert ctx.ledger.record(conn, loaded.request, number, utcnow(), moved, done, slot + 1)


def test_tallies_match_a_full_scan(ctx: Context) -> None:
    for user in USERS:
        add_request(ctx, user, State.SUCCEEDED, attempts=2)
        add_request(ctx, user, State.FAILED, attempts=1, outcome=None)
    queued = [add_request(ctx, u, State.QUEUED, at=utcnow()) for u in USERS]
    dispatch_once(ctx, queued[0])
    with ctx.sessions() as s, s.begin():  # a state change outside the dispatch
        s.execute(update(REQUESTS).where(REQUESTS.c.id == queued[1]).values(state="cancelled"))
    assert tallied(ctx, fold=False) == full_scan(ctx)
    assert tallied(ctx, fold=True) == full_scan(ctx)
    with ctx.sessions() as s:
        delay = {k[1]: t for k, t in tallies.read(s.connection()).items() if k[0] == "delay"}
    # three old first calls 7 s after creation (le=15), one dispatched at once (le=1)
    assert (delay["15"].n, delay["1"].n) == (3, 1)
    assert delay["15"].total == pytest.approx(21.0, abs=0.01)


def test_metrics_scrape_and_its_token(db_url: str, redis_url: str) -> None:
    ctx = make_ctx(db_url, redis_url, [], metrics_token="scrape-secret")
    try:
        rid = add_request(ctx, USERS[0], State.QUEUED, at=utcnow())
        dispatch_once(ctx, rid)
        with TestClient(create_app(ctx, send_webhook_event=lambda *a: None)) as c:
            assert c.get("/metrics").status_code == 401
            wrong = c.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and "detail" in wrong.json()
            text = c.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).text
        assert 'spdist_requests{state="succeeded"} 1.0' in text
        assert 'spdist_attempts_total{outcome="triggered"} 1.0' in text
        assert 'spdist_enqueue_to_dispatch_seconds_bucket{le="1"} 1.0' in text
        assert "scrape-secret" not in text
    finally:
        close(ctx)


def test_prune_keeps_what_is_still_needed(ctx: Context) -> None:
    user = USERS[0]
    gone = [add_request(ctx, user, State.SUCCEEDED, attempts=2) for _ in range(5)]
    kept = {
        "queued": add_request(ctx, user, State.QUEUED),
        "held": add_request(ctx, user, State.HELD),  # waiting for a release, never finished
        "retrying": add_request(ctx, user, State.RETRYING, attempts=1),
        "dispatching": add_request(ctx, user, State.DISPATCHING, attempts=1, outcome=None),
        "recent": add_request(ctx, user, State.SUCCEEDED, at=utcnow(), attempts=1, free_us=99),
        # old and finished, but its attempt is the user's newest: the pacing floor
        "floor": add_request(ctx, USERS[1], State.DEAD, attempts=1, free_us=10**15),
    }
    with ctx.sessions() as s, s.begin():
        for rid in (gone[0], gone[1], kept["recent"]):  # callback tries go with their request
            s.add(
                CallbackDelivery(
                    request_id=rid,
                    event_no=1,
                    event="distribution.succeeded",
                    try_no=1,
                    due_at=OLD,
                    finished_at=OLD,
                    outcome="delivered",
                )
            )
        for processed in (OLD, None):
            s.add(
                WebhookEvent(
                    event="build.distributing", payload={}, received_at=OLD, processed_at=processed
                )
            )
    counted = tallied(ctx, fold=True)
    cutoff = retention.cutoff_for(30)
    with ctx.sessions() as s:
        would = retention.would_prune(s, cutoff)
    with ctx.sessions() as s:
        done = retention.prune(s, cutoff, batch=2)
    assert done.rows == would.rows
    assert done.rows == {
        "distribution_attempts": 10,
        "callback_deliveries": 2,
        "distribution_requests": 5,
        "webhook_events": 1,
    }
    with ctx.sessions() as s:
        left = set(s.scalars(select(DistributionRequest.id)))
        assert left == set(kept.values()) and not left & set(gone)
        assert s.scalar(select(func.count()).select_from(WebhookEvent)) == 1
        assert s.scalar(select(func.count()).select_from(CallbackDelivery)) == 1
    after = tallied(ctx, fold=True)
    assert after[("requests", "succeeded")] == counted[("requests", "succeeded")] - 5
    assert after[("requests", "held")] == counted[("requests", "held")] == 1
    # counters of calls made never go down when history is deleted
    assert after[("attempts", "rate_limited")] == counted[("attempts", "rate_limited")]


def test_lanes_in_one_batch_match_lane_by_lane(ctx: Context) -> None:
    later_us = int(utcnow().timestamp() * 1e6) + 3600 * 10**6  # floors an hour ahead
    for n, user in enumerate(USERS):
        for _ in range(n + 1):
            add_request(ctx, user, State.QUEUED, at=utcnow())
        add_request(ctx, user, State.SUCCEEDED, attempts=1, free_us=later_us + n * 10**6)
    ctx.pacer.redis.hset(f"spdist:lane:{{{USERS[0]}}}:s", "next_free", str(later_us * 2))
    with ctx.sessions() as s:
        batch = [lane.as_dict() for lane in views.lanes(ctx, s)]
        one_by_one = [views.lane(ctx, s, u).as_dict() for u in USERS]
    assert [len(lane["items"]) for lane in batch] == [1, 2, 3]
    assert len({lane["nextSlotAt"] for lane in batch}) == 3
    for a, b in zip(batch, one_by_one, strict=True):
        assert (a["userId"], a["nextSlotAt"], [i["id"] for i in a["items"]]) == (
            b["userId"],
            b["nextSlotAt"],
            [i["id"] for i in b["items"]],
        )


def test_prune_beside_concurrent_dispatch(pg_url: str, redis_url: str) -> None:
    """Dispatches run while the prune deletes in small batches: every dispatch records its
    answer, nothing waiting or in flight is deleted, and the counts still add up."""
    ctx = make_ctx(pg_url, redis_url, [])
    try:
        for n in range(60):
            add_request(ctx, USERS[n % 3], State.SUCCEEDED, attempts=2, free_us=10 * n)
        fresh = [add_request(ctx, USERS[n % 3], State.QUEUED, at=OLD) for n in range(30)]
        errors: list[BaseException] = []

        def dispatch_all() -> None:
            try:
                for rid in fresh:
                    dispatch_once(ctx, rid)
            except BaseException as exc:  # reported below
                errors.append(exc)

        worker = threading.Thread(target=dispatch_all)
        worker.start()
        with ctx.sessions() as s:
            done = retention.prune(s, retention.cutoff_for(30), batch=3)
        worker.join()
        assert not errors
        with ctx.sessions() as s:
            states = {
                r.id: r.state
                for r in s.execute(select(DistributionRequest.id, DistributionRequest.state))
            }
        # each dispatched request is recent now (updated_at), so none of them went
        assert all(states[rid] == State.SUCCEEDED for rid in fresh)
        assert done.rows["distribution_requests"] >= 57  # each user's floor holder may stay
        counts, scanned = tallied(ctx, fold=True), full_scan(ctx)
        assert {k: n for k, n in counts.items() if k[0] == "requests"} == {
            k: n for k, n in scanned.items() if k[0] == "requests"
        }
        assert counts[("attempts", "triggered")] == 30
    finally:
        close(ctx)


def test_prune_command(db_url: str, redis_url: str, tmp_path: Any) -> None:
    from tests.integration.test_cli import spdist
    from worker.dev.procs import spdist_env

    ctx = make_ctx(db_url, redis_url, [])
    try:
        for _ in range(3):
            add_request(ctx, USERS[0], State.CANCELLED, attempts=1)
        add_request(ctx, USERS[0], State.QUEUED, at=utcnow(), attempts=1, free_us=10**12)
        env = spdist_env(db_url, redis_url, "http://127.0.0.1:9/x", {})
        dry = spdist(env, "prune", "--older-than", "30", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert (
            "would delete 3 distribution_attempts, 0 callback_deliveries, 3 distribution_r"
            in dry.stdout
        )
        real = spdist(env, "prune", "--older-than", "30")
        assert real.returncode == 0 and "deleted 3 distribution_attempts" in real.stdout
        again = spdist(env, "prune", "--older-than", "30")
        assert "deleted nothing" in again.stdout
        bad = spdist(env, "prune", "--older-than", "-1")
        assert bad.returncode != 0 and "DAYS must be a number above 0" in bad.stderr
    finally:
        close(ctx)


def test_compaction_folds_every_delta_and_keeps_the_counts(pg_url: str, redis_url: str) -> None:
    ctx = make_ctx(pg_url, redis_url, [])
    try:
        for n in range(12):
            add_request(ctx, USERS[n % 3], State.SUCCEEDED, attempts=1)
        before = tallied(ctx, fold=False)
        engine = ctx.engine
        with engine.connect() as conn:
            pending = conn.execute(select(func.count()).select_from(MetricDelta)).scalar_one()
            assert pending > 0
            assert tallies.compact_all(ctx.ledger, conn) == pending
            assert conn.execute(select(func.count()).select_from(MetricDelta)).scalar_one() == 0
        assert tallied(ctx, fold=False) == before == full_scan(ctx)
    finally:
        close(ctx)
