# ruff: noqa: F811  (pytest fixtures imported from a sibling module)
"""Webhook events that arrive while our call is being made: acted on once its outcome is in.

Streampixel distributes asynchronously and never retries, so `build.distributing` (or
`build.rejected`) can come before the call's own answer has been read. The responder here
delivers the event from inside the call, as the real timing allows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.unit.test_dispatch import PROJECT, UPLOAD, Harness, make, ok  # noqa: F401
from worker import reconcile, webhooks

NO_URL = httpx.Response(400, json={"message": "File has no URL"})


def during_call(h: list[Harness], event: str, answer: httpx.Response, **extra: Any) -> Any:
    """A responder that delivers `event` for the upload mid-call, then answers."""
    sent: list[str | None] = []

    def responder(_: httpx.Request) -> httpx.Response:
        at = f"2026-12-02T05:00:{len(sent):02d}Z"
        payload = {"event": event, "projectId": PROJECT, "uploadId": UPLOAD, "timestamp": at}
        payload.update(extra)
        event_id = webhooks.store(h[0].ctx, payload)
        assert event_id is not None
        sent.append(webhooks.process(h[0].ctx, event_id))
        return answer

    responder.sent = sent  # type: ignore[attr-defined]
    return responder


def test_distributing_during_the_call_confirms_it(make: Callable[..., Harness]) -> None:
    box: list[Harness] = []
    responder = during_call(box, "build.distributing", ok(None))  # type: ignore[arg-type]
    box.append(make(responder))
    rid = box[0].enqueue()
    assert box[0].run_messages() == ["triggered"]
    assert responder.sent == [webhooks.WAITING_FOR_CALL]  # not "confirmed 0" for good
    assert box[0].request(rid).state == "confirmed"


def test_every_distribution_of_one_upload_is_confirmed(make: Callable[..., Harness]) -> None:
    box: list[Harness] = []
    responder = during_call(box, "build.distributing", ok(None))  # type: ignore[arg-type]
    box.append(make(responder))
    rids = []
    for _ in range(4):  # a rollback, a re-distribution...: the same upload again
        rids.append(box[0].enqueue(coalesce=False))
        box[0].run_messages()
    assert [box[0].request(r).state for r in rids] == ["confirmed"] * 4


def test_rejected_during_a_no_url_call_ends_it_failed(make: Callable[..., Harness]) -> None:
    box: list[Harness] = []
    responder = during_call(box, "build.rejected", NO_URL, objection="bad build")
    box.append(make(responder))
    rid = box[0].enqueue()
    assert box[0].run_messages() == ["processing"]
    req = box[0].request(rid)
    assert req.state == "failed" and "bad build" in (req.last_message or "")
    reconcile.reconcile(box[0].ctx)
    box[0].run_messages()
    assert len(box[0].calls) == 1  # no more "no URL" retries after the rejection


def test_rejected_during_a_triggered_call_ends_it_failed(make: Callable[..., Harness]) -> None:
    box: list[Harness] = []
    responder = during_call(box, "build.rejected", ok(None))  # type: ignore[arg-type]
    box.append(make(responder))
    rid = box[0].enqueue()
    box[0].run_messages()
    assert box[0].request(rid).state == "failed"


def test_a_request_after_the_rejection_makes_no_call(make: Callable[..., Harness]) -> None:
    h = make(lambda _: NO_URL)
    payload = {"event": "build.rejected", "projectId": PROJECT, "uploadId": UPLOAD}
    event_id = webhooks.store(h.ctx, payload)
    assert event_id is not None and webhooks.process(h.ctx, event_id) == "failed 0"
    rid = h.enqueue()  # made after the rejection: nothing will ever come for this build
    assert h.run_messages() == ["build-rejected"]
    assert h.request(rid).state == "failed"
    assert "build.rejected" in (h.request(rid).last_message or "")
    reconcile.reconcile(h.ctx)
    h.run_messages()
    assert h.calls == []
