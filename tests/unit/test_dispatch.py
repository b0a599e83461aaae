"""The dispatch flow in one process: fakeredis pacer, SQLite, MockTransport Streampixel."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fakeredis
import httpx
import pytest
from sqlalchemy import func, select

from worker import distributions, reconcile
from worker.context import build_context
from worker.db import make_engine
from worker.dispatch import dispatch
from worker.models import DistributionAttempt, DistributionRequest
from worker.pacer import Wake, keys, parse_member
from worker.settings import Settings

USER = "1" * 24
PROJECT, PROJECT2 = "a" * 24, "b" * 24
UPLOAD, UPLOAD2 = "c" * 24, "d" * 24
KEY = "sk-unit-secret"

Responder = Callable[[httpx.Request], httpx.Response]


class Harness:
    """A context whose published dispatch messages land in a list."""

    def __init__(self, tmp: Path, responder: Responder, **overrides: object) -> None:
        from worker.migrate import upgrade

        url = f"sqlite:///{tmp / 'unit.db'}"
        upgrade(url)
        defaults: dict[str, object] = {
            "min_interval_s": 0.05,
            "pacer_lead_s": 0.01,
            "transient_backoff_base_s": 0.01,
            "backoff_base_s": 0.01,
        }
        self.settings = Settings(
            database_url=url,
            api_keys={USER: KEY},
            **{**defaults, **overrides},  # type: ignore[arg-type]
        )
        self.engine = make_engine(url)
        self.server = fakeredis.FakeServer()
        self.redis = fakeredis.FakeRedis(server=self.server)
        self.sent: list[tuple[str, Wake]] = []
        self.calls: list[dict[str, str]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            self.calls.append(json.loads(request.content))
            return responder(request)

        transport = httpx.MockTransport(handler)
        self.ctx = build_context(
            self.settings.model_copy(update={"streampixel_url": "http://sp.test/api"}),
            redis_client=self.redis,
            send=lambda user, wake: self.sent.append((user, wake)),
            transport=transport,
            engine=self.engine,
        )

    def enqueue(self, project: str = PROJECT, upload: str = UPLOAD, **kw: object) -> str:
        new = distributions.validate(self.ctx, USER, project, upload, **kw)  # type: ignore[arg-type]
        return distributions.enqueue(self.ctx, new).id

    def run_messages(self, limit: int = 50) -> list[str]:
        """Deliver published messages in order, as a worker would."""
        words = []
        while self.sent and limit:
            _, wake = self.sent.pop(0)
            time.sleep(wake.delay_s)  # the broker would hold it until due
            words.append(dispatch(self.ctx, parse_member(wake.member)[1]))
            limit -= 1
        return words

    def request(self, rid: str) -> DistributionRequest:
        with self.ctx.sessions() as s:
            return distributions.get(s, rid)

    def close(self) -> None:
        if self.ctx._client is not None:
            self.ctx._client.close()
        self.redis.close()
        self.engine.dispose()


def ok(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"message": "Distribution triggered"})


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(responder: Responder = ok, **kw: object) -> Harness:
        h = Harness(tmp_path, responder, **kw)
        made.append(h)
        return h

    yield build
    for h in made:
        h.close()


def test_enqueue_then_dispatch_succeeds(make: Callable[..., Harness]) -> None:
    h = make()
    rid = h.enqueue()
    assert h.run_messages() == ["triggered"]
    req = h.request(rid)
    assert req.state == "succeeded" and req.attempts[0].outcome == "triggered"
    assert h.calls == [{"apiKey": KEY, "userId": USER, "projectId": PROJECT, "uploadId": UPLOAD}]


def test_invalid_ids_and_unknown_user_are_refused(make: Callable[..., Harness]) -> None:
    h = make()
    with pytest.raises(Exception, match="projectId"):
        distributions.validate(h.ctx, USER, "nothex", UPLOAD)
    with pytest.raises(Exception, match="no API key"):
        distributions.validate(h.ctx, "2" * 24, PROJECT, UPLOAD)


def test_key_removed_after_enqueue_fails_without_a_call(make: Callable[..., Harness]) -> None:
    h = make()
    rid = h.enqueue()
    h.ctx.keyring._inline.clear()  # the key was rotated out while the request waited
    assert h.run_messages() == ["no-key"]
    req = h.request(rid)
    assert req.state == "failed" and req.last_message == "no API key is configured for this userId"
    assert h.calls == [] and req.attempts == []
    assert h.ctx.pacer.members(USER) == []


def test_coalescing_supersedes_the_queued_request(make: Callable[..., Harness]) -> None:
    h = make()
    first = h.enqueue()
    second = h.enqueue(upload=UPLOAD2)
    old = h.request(first)
    assert old.state == "superseded" and old.superseded_by == second
    assert h.request(second).seq == old.seq
    assert h.enqueue(upload=UPLOAD, coalesce=False) != second
    assert h.request(second).state == "queued"


def test_duplicate_message_makes_one_call(make: Callable[..., Harness]) -> None:
    h = make()
    rid = h.enqueue()
    assert dispatch(h.ctx, rid) == "triggered"
    assert dispatch(h.ctx, rid) == "stale"
    assert len(h.calls) == 1


@pytest.mark.parametrize(
    ("status", "body", "state", "outcome"),
    [
        (401, {"message": "Unauthorized: Invalid API Key"}, "failed", "unauthorized"),
        (403, {"message": "Access denied"}, "failed", "forbidden"),
        (404, {"message": "File not found in project"}, "failed", "not_found"),
        (400, {"message": "File has no URL"}, "retrying", "processing"),
        (500, {"message": "Internal server error"}, "retrying", "server_error"),
        (
            429,
            {"message": "Rate limit exceeded. Try again in 2 minutes."},
            "retrying",
            "rate_limited",
        ),
    ],
)
def test_answers_move_the_request(
    make: Callable[..., Harness], status: int, body: dict[str, str], state: str, outcome: str
) -> None:
    h = make(lambda _: httpx.Response(status, json=body))
    rid = h.enqueue()
    h.run_messages(limit=1)
    req = h.request(rid)
    assert (req.state, req.attempts[0].outcome) == (state, outcome)
    assert req.last_message == body["message"]


def test_rate_limited_keeps_the_head_and_uses_no_attempt(make: Callable[..., Harness]) -> None:
    answers = iter([429, 200])
    h = make(lambda _: httpx.Response(next(answers), json={"message": "x"}))
    first, _ = h.enqueue(), h.enqueue(project=PROJECT2)
    h.run_messages(limit=1)
    assert h.ctx.pacer.members(USER)[0].split(":")[1] == first
    assert h.request(first).failures == 0


def test_transient_failures_end_dead(make: Callable[..., Harness]) -> None:
    h = make(lambda _: httpx.Response(502, text="<html>bad gateway</html>"), max_attempts=2)
    rid = h.enqueue()
    h.run_messages(limit=1)
    assert h.request(rid).state == "retrying"
    with h.ctx.sessions.begin() as s:  # its backoff is over
        req = s.get(DistributionRequest, rid)
        assert req is not None
        req.next_attempt_at = req.created_at
    reconcile.reconcile(h.ctx)
    h.run_messages()
    req = h.request(rid)
    assert req.state == "dead" and [a.outcome for a in req.attempts] == ["server_error"] * 2


def test_attempt_row_is_committed_before_the_call(make: Callable[..., Harness]) -> None:
    seen: list[int] = []

    def responder(_: httpx.Request) -> httpx.Response:
        with h.ctx.sessions() as s:
            seen.extend(s.scalars(select(DistributionAttempt.number)).all())
        return ok(_)

    h = make(responder)
    h.enqueue()
    h.run_messages()
    assert seen == [1]


def test_redis_down_means_no_call_and_nothing_lost(make: Callable[..., Harness]) -> None:
    h = make()
    rid = h.enqueue()
    h.sent.clear()
    h.server.connected = False
    with pytest.raises(Exception, match="Redis"):
        dispatch(h.ctx, rid)
    assert h.calls == [] and h.request(rid).state == "queued"
    h.server.connected = True
    h.redis.delete(keys.lane_wake(USER))  # the lost message's marker expires
    reconcile.reconcile(h.ctx)
    assert h.run_messages() == ["triggered"]


def test_a_lane_redis_lost_is_refilled_from_sql_in_chunks(
    make: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = make()
    monkeypatch.setattr(reconcile, "BATCH", 2)  # five waiting requests: three chunks
    for p in range(5):
        h.enqueue(project=f"{p + 1:024x}")
    reconcile.reconcile(h.ctx)  # the outbox marks them published: only a refill brings
    reconcile.reconcile(h.ctx)  # them back now
    reconcile.reconcile(h.ctx)
    lane = h.ctx.pacer.members(USER)
    assert len(lane) == 5
    with h.ctx.sessions() as s:
        assert s.scalar(select(func.count()).where(DistributionRequest.published_at.is_(None))) == 0
    h.redis.flushall()
    reconcile.reconcile(h.ctx)
    assert h.ctx.pacer.members(USER) == lane  # every one back, in the same order
    assert h.run_messages(limit=1) == ["triggered"]


def test_a_flushed_lane_comes_back_whole_when_some_requests_were_not_marked_yet(
    make: Callable[..., Harness],
) -> None:
    """The outbox re-adds the requests it has not marked published; the lane must not then
    pass for intact and run those newest ones before the older requests SQL holds."""
    h = make()
    for p in range(3):
        h.enqueue(project=f"{p + 1:024x}")
    reconcile.reconcile(h.ctx)  # the outbox marks these three published
    h.enqueue(project=f"{9:024x}")  # not marked yet
    lane = h.ctx.pacer.members(USER)
    h.redis.flushall()
    reconcile.reconcile(h.ctx)
    assert h.ctx.pacer.members(USER) == lane


def test_message_run_just_before_its_slot_waits_instead_of_going_round(
    make: Callable[..., Harness],
) -> None:
    """A timer or clock offset a few ms off runs a message before the slot's lead: it waits
    the rest in the task, one execution, rather than republishing itself."""
    sent_at: list[float] = []

    def responder(request: httpx.Request) -> httpx.Response:
        sent_at.append(time.monotonic())
        return ok(request)

    h = make(responder)
    h.enqueue()
    second = h.enqueue(upload=UPLOAD2, coalesce=False)
    assert h.run_messages(limit=1) == ["triggered"]
    [(_, wake)] = h.sent
    h.sent.clear()
    assert wake.delay_s > 0.02
    time.sleep(wake.delay_s - 0.02)  # 20 ms before it is due
    assert dispatch(h.ctx, second) == "triggered"
    assert h.sent == [] and len(h.calls) == 2
    assert sent_at[1] - sent_at[0] >= h.settings.min_interval_s
