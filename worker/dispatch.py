"""One dispatch: reserve the lane's slot, claim in SQL, fire on time, call, record.

    reserve (Redis)  ->  claim: fence + request + attempt row (SQL, one commit)
    ->  open the connection (DNS, TCP, TLS)  ->  sleep until the slot
    ->  fire (Redis: the next slot opens `interval` after this instant)  ->  HTTP request
    ->  the lane's next slot moved to when the request actually left, plus the interval
    ->  record the outcome (SQL, fenced by the attempt number)  ->  settle and wake the lane

Everything slow (the SQL writes, the connection set-up) happens *before* the slot, inside
the `lead` the pacer grants; only the fire script stands between the slot and the send.
Whatever still delays the send (a GC pause, a descheduled or stopped process, a connection
that closed meanwhile) moves the next slot by as much. The claim is refused when the
user's pacing fence in SQL stands after the granted slot, whatever Redis remembers: a lane
whose Redis state is older than the truth is corrected, never obeyed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from worker import outcomes, webhooks
from worker.context import Context
from worker.distributions import member, score, wake_lane
from worker.errors import NotSent, PacerUnavailable, StreampixelError
from worker.ledger import Fenced, Loaded, Snapshot
from worker.models import (
    WAITING,
    State,
    utcnow,
)
from worker.outcomes import from_us
from worker.pacer import US, Reply, parse_member
from worker.streampixel import SendTiming, Triggered

log = logging.getLogger(__name__)

REJECTED_BUILD = "build rejected by Streampixel (build.rejected webhook): no call made"
# A message run a little before its slot's lead (a timer or a clock offset off by a few ms)
# waits out the rest in the task: going round the broker again would cost a second execution.
SHORT_WAIT_S = 0.5
# An early message (a worker whose clock runs ahead) waits in the task up to this long
# rather than bouncing through the broker again and again.
MAX_IN_TASK_WAIT_S = 60.0


@dataclass(frozen=True)
class Ticket:
    """A granted reservation: the slot, and when it falls on this process's monotonic clock."""

    token: str
    member: str
    slot_us: int
    slot_mono: float


@dataclass(frozen=True)
class Fired:
    """A slot taken: the Redis time of firing, the entries left in the lane, and this
    process's monotonic clock just *before* the fire script was sent (every instant it
    measures from there is at least as late on Redis's clock as it says)."""

    now_us: int
    waiting: int
    before_mono: float


def dispatch(ctx: Context, request_id: str, *, due_us: int | None = None, user_id: str = "") -> str:
    """Try to make the call for this request; returns a word saying what happened."""
    with pinned(ctx) as conn:
        return _dispatch(ctx, conn, request_id, due_us, user_id)


@contextmanager
def pinned(ctx: Context) -> Iterator[Connection]:
    """One connection, checked out once for the whole dispatch (no pool round trip or
    pre-ping per step); every SQL step of the dispatch runs on it. No transaction stays
    open across the sleep or the call: each step commits. On PostgreSQL every step is one
    statement, so the connection autocommits: no BEGIN and COMMIT round trips."""
    engine = ctx.autocommit
    ctx.client  # noqa: B018 - built now, not between the fire and the send
    with engine.connect() as conn:
        yield conn


def _dispatch(
    ctx: Context, conn: Connection, request_id: str, due_us: int | None, user_id: str
) -> str:
    loaded = ctx.ledger.load(conn, request_id)
    if loaded is None:
        log.warning("dispatch message for unknown request %s dropped", request_id)
        if user_id:
            _drop_ghost(ctx, user_id, request_id)
        return "unknown"
    req = loaded.request
    if not _dispatchable(ctx, req):
        if req.state not in WAITING:
            ctx.pacer.remove(req.user_id, member(req))
        wake_lane(ctx, req.user_id)
        return "stale"
    if loaded.rejected:
        _fail_without_call(ctx, conn, req, REJECTED_BUILD)
        return "build-rejected"
    if ctx.keyring.get(req.user_id) is None:
        _fail_without_call(ctx, conn, req, "no API key is configured for this userId")
        return "no-key"
    ticket_or_word = _reserve(ctx, conn, loaded, due_us)
    if isinstance(ticket_or_word, str):
        return ticket_or_word
    return _dispatch_reserved(ctx, conn, req, ticket_or_word)


def _dispatch_reserved(ctx: Context, conn: Connection, req: Snapshot, ticket: Ticket) -> str:
    fence_us = ctx.pacer.worst_free_us(ticket.slot_us)
    try:
        claimed = _claim(ctx, conn, req, ticket.slot_us, fence_us)
    except SQLAlchemyError:
        _release(ctx, req, ticket)
        raise
    if isinstance(claimed, Fenced):
        _correct_lane(ctx, req, ticket, claimed)
        return "fenced"
    if claimed is None:
        _release(ctx, req, ticket)
        _restore_fence(ctx, conn, req, req.attempt_count + 1, fence_us)
        return "claimed-elsewhere"
    _prepare(ctx)
    fired = _fire(ctx, req, ticket)
    result = None if fired is None else _call(ctx, req, fired)
    if fired is None or result is None:
        _missed(ctx, conn, req, ticket, claimed, fence_us)
        return "slot-missed"
    answer, left_us = result
    _left(ctx, req, left_us, fired.waiting)
    plan = outcomes.plan(ctx.settings, req, answer, left_us)
    recorded = _record(ctx, conn, req, claimed, plan, fence_us)
    _settle(ctx, req, ticket, plan)
    # Webhook events that came during the call are acted on now; one probe finds whether any
    # did (a build Streampixel rejected is refused before its call: see `_dispatch`).
    if recorded and ctx.ledger.pending_events(conn, req.upload_id):
        webhooks.after_outcome(ctx, req.upload_id)
    return plan.outcome if recorded else "lease-lost"


def _missed(
    ctx: Context, conn: Connection, req: Snapshot, ticket: Ticket, number: int, fence_us: int
) -> None:
    """No call was made after all: undo the claim, keep the request at the lane's head."""
    _unclaim(ctx, conn, req, number, fence_us)
    ctx.pacer.settle(
        req.user_id, ticket.member, token=ticket.token, action="requeue", score=score(req)
    )
    wake_lane(ctx, req.user_id)


def _correct_lane(ctx: Context, req: Snapshot, ticket: Ticket, fenced: Fenced) -> None:
    """Redis granted a slot before the record allows (its state is older than the truth:
    a failover to a lagging replica, a restore from a snapshot): move the lane's next slot
    to the fence and wake the lane for then."""
    early_s = (fenced.not_before_us - ticket.slot_us) / US
    log.warning(
        "lane of %s: Redis granted a slot %.3f s before the last call allows "
        "(Redis state older than SQL); moved to the fence",
        req.user_id,
        early_s,
    )
    ctx.pacer.settle(
        req.user_id, ticket.member, token=ticket.token, not_before_us=fenced.not_before_us
    )
    wake_lane(ctx, req.user_id, force=True)


def _prepare(ctx: Context) -> None:
    """Open the call's connection now, in the lead; if that fails, the call tries again."""
    try:
        ctx.client.prepare()
    except StreampixelError as exc:
        log.warning("no connection to Streampixel opened ahead of the slot: %s", exc)


def _drop_ghost(ctx: Context, user_id: str, request_id: str) -> None:
    """A lane entry whose request is gone from SQL (deleted) must not block its lane."""
    ghosts = [m for m in ctx.pacer.members(user_id) if parse_member(m)[1] == request_id]
    for m in ghosts:
        ctx.pacer.remove(user_id, m)
    if ghosts:
        wake_lane(ctx, user_id)


def _dispatchable(ctx: Context, req: Snapshot) -> bool:
    if req.state == State.QUEUED:
        return True
    if req.state != State.RETRYING:
        return False
    # The Redis clock, not this machine's: next_attempt_at was set on it too.
    horizon = from_us(ctx.pacer.now_us()) + timedelta(
        seconds=ctx.settings.pacer_lead_s + ctx.settings.pacer_max_late_s
    )
    return req.next_attempt_at is None or req.next_attempt_at <= horizon


def _pause_s(ctx: Context, reply: Reply, due_us: int | None) -> float:
    """How long to wait in the task before asking again; 0 hands the lane on instead."""
    if reply.kind == "wait":
        to_grant_s = (reply.value - ctx.pacer.lead_us - reply.now_us) / US
        if to_grant_s <= SHORT_WAIT_S:
            return max(to_grant_s, 0.0)
    if reply.kind not in ("wait", "busy") or due_us is None:
        return 0.0
    early_s = (due_us - reply.now_us) / US  # run well before its due time, by Redis's clock
    if early_s <= SHORT_WAIT_S:
        return 0.0
    log.warning("dispatch message ran %.1f s early: is this worker's clock ahead?", early_s)
    return min(early_s, MAX_IN_TASK_WAIT_S)


def _reserve(ctx: Context, conn: Connection, loaded: Loaded, due_us: int | None) -> Ticket | str:
    req = loaded.request
    token, m = uuid.uuid4().hex, member(req)
    reply = _ask(ctx, conn, loaded, m, token)
    pause_s = _pause_s(ctx, reply, due_us)
    if pause_s > 0:
        time.sleep(pause_s)
        reply = _ask(ctx, conn, loaded, m, token)
    if reply.kind == "granted":
        mono = time.monotonic() + (reply.value - reply.now_us) / US
        return Ticket(token, m, reply.value, mono)
    return _not_granted(ctx, req, reply)


def _ask(ctx: Context, conn: Connection, loaded: Loaded, m: str, token: str) -> Reply:
    """Reserve; the request read with its lane's floor, so a lane with nothing else waiting
    and no Redis state (new, idle for long, or Redis emptied) costs one script call."""
    req = loaded.request
    floor = loaded.floor_us if loaded.alone else None
    reply = ctx.pacer.reserve(req.user_id, m, score(req), token, floor, floor_if_missing=True)
    if reply.kind == "floor":
        floor = _restore_lane(ctx, conn, req.user_id, reply.now_us)
        reply = ctx.pacer.reserve(req.user_id, m, score(req), token, floor)
    return reply


def _not_granted(ctx: Context, req: Snapshot, reply: Reply) -> str:
    """Behind another request, or too early, or the lane held: hand the lane on."""
    if reply.kind == "behind":
        wake_lane(ctx, req.user_id)
    else:
        wake_lane(ctx, req.user_id, force=True)
    return reply.kind


def _restore_lane(ctx: Context, conn: Connection, user_id: str, now_us: int) -> int:
    """The lane has no pacing state (new, idle for long, or Redis restarted empty): refill
    it from SQL and return the floor: no slot before the last recorded attempt allows."""
    rows, floor = ctx.ledger.waiting_and_floor(conn, user_id)
    horizon = from_us(now_us)
    due = [r for r in rows if r.next_attempt_at is None or r.next_attempt_at <= horizon]
    ctx.pacer.add(user_id, [(member(r), score(r)) for r in due])
    return floor


def _claim(
    ctx: Context, conn: Connection, req: Snapshot, slot_us: int, fence_us: int
) -> int | Fenced | None:
    """The fence moved to `fence_us`, the conditional UPDATE to `dispatching` and the
    attempt row: one commit, before the call."""
    # The lease runs on the Redis clock (the slot's), which every reconciler reads too:
    # a worker whose own clock is off must not write a lease that is already expired.
    lease = from_us(slot_us) + timedelta(seconds=ctx.lease_s)
    attempt = {"slot_us": slot_us, "lane_free_us": fence_us, "worker": ctx.worker_name}
    ctx.hooks.before_claim(req.upload_id)
    return ctx.ledger.claim(conn, req, utcnow(), lease, attempt)


def _unclaim(ctx: Context, conn: Connection, req: Snapshot, number: int, fence_us: int) -> None:
    """No call was made after all: remove the attempt row, put the request back."""
    try:
        ctx.ledger.unclaim(conn, req, number, fence_us)
    except SQLAlchemyError:
        log.exception("could not undo claim of %s; its lease will expire", req.id)


def _restore_fence(
    ctx: Context, conn: Connection, req: Snapshot, number: int, fence_us: int
) -> None:
    """A claim refused after moving the fence (its request changed meanwhile) gives it back."""
    try:
        ctx.ledger.restore_fence(conn, req, number, fence_us)
    except SQLAlchemyError:
        log.exception("could not give back the fence of %s; the lane waits longer", req.user_id)


def _fire(ctx: Context, req: Snapshot, ticket: Ticket) -> Fired | None:
    """Sleep until the slot, then take it; None: no call."""
    target = ticket.slot_mono
    for _ in range(20):
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        before = time.monotonic()
        try:
            reply = ctx.pacer.fire(req.user_id, ticket.member, ticket.token)
        except PacerUnavailable as exc:
            log.warning("no call for %s: %s", req.id, exc)
            return None
        if reply.kind == "fired":
            ctx.hooks.after_fire(ticket.member)
            return Fired(reply.now_us, reply.value, before)
        if reply.kind != "early":
            log.warning("no call for %s: slot %s", req.id, reply.kind)
            return None
        target = time.monotonic() + (reply.value - reply.now_us) / US
    return None


def _call(
    ctx: Context, req: Snapshot, fired: Fired
) -> tuple[Triggered | StreampixelError, int] | None:
    """The call, sent no later than the send window after the fire, and the Redis time it
    left at; None if it was given up before a byte left."""
    api_key = ctx.keyring.get(req.user_id) or ""
    timing = SendTiming()
    send_by = fired.before_mono + ctx.settings.pacer_send_window_s
    try:
        answer: Triggered | StreampixelError = ctx.client.distribute(
            api_key=api_key,
            user_id=req.user_id,
            project_id=req.project_id,
            upload_id=req.upload_id,
            send_by=send_by,
            timing=timing,
        )
    except NotSent as exc:
        log.warning("no call for %s: %s", req.id, exc)
        return None
    except StreampixelError as exc:
        answer = exc
    # Unknown (the transport reports nothing, or the request never got out): assume now.
    left_mono = timing.sent_mono if timing.sent_mono is not None else time.monotonic()
    return answer, fired.now_us + max(0, int((left_mono - fired.before_mono) * US))


def _left(ctx: Context, req: Snapshot, left_us: int, waiting: int) -> None:
    """The lane's next slot: the interval after the call actually left, not after the fire.
    The next head's message goes out now too, before this answer is recorded, so a slow
    database write never delays the next slot (a 429 re-wakes this one)."""
    not_before = left_us + ctx.pacer.gap_us
    try:
        if waiting:
            wake_lane(ctx, req.user_id, not_before_us=not_before)
        else:  # a request enqueued since wakes the lane itself
            ctx.pacer.settle(req.user_id, "", not_before_us=not_before)
    except PacerUnavailable as exc:
        log.warning("lane of %s not moved on (the fence holds it): %s", req.user_id, exc)


def _record(
    ctx: Context,
    conn: Connection,
    req: Snapshot,
    number: int,
    plan: outcomes.Plan,
    fence_us: int,
) -> bool:
    """Complete the attempt and move the request, fenced by the attempt number.

    The call is made; its outcome must reach SQL, so a database error is retried for
    about half the lease. Past that the lease expires and the reconciler records
    `unknown` rather than guess.
    """
    deadline = time.monotonic() + ctx.lease_s / 2
    pause = 0.2
    while True:
        try:
            return _write_outcome(ctx, conn, req, number, plan, fence_us)
        except SQLAlchemyError as exc:
            if time.monotonic() + pause > deadline:
                log.error("outcome of %s attempt %d not recorded: %s", req.id, number, exc)
                return False
            log.warning("recording %s attempt %d failed, retrying: %s", req.id, number, exc)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _write_outcome(
    ctx: Context, conn: Connection, req: Snapshot, number: int, plan: outcomes.Plan, fence_us: int
) -> bool:
    attempt = {
        "http_status": plan.http_status,
        "outcome": plan.outcome,
        "message": plan.message,
        "lane_free_us": plan.lane_free_us,
    }
    done = ctx.ledger.record(conn, req, number, utcnow(), plan.request_values, attempt, fence_us)
    if not done:
        log.warning("lease of %s attempt %d lost; outcome stays unknown", req.id, number)
    return done


def _settle(ctx: Context, req: Snapshot, ticket: Ticket, plan: outcomes.Plan) -> None:
    """After a 429: push the lane, keep the request at its head, and wake it again (the
    lane was already woken for the next head before the answer was read)."""
    if not plan.requeue_at_head:
        return
    try:
        ctx.pacer.settle(
            req.user_id,
            ticket.member,
            action="requeue",
            score=score(req),
            not_before_us=plan.lane_free_us,
        )
        wake_lane(ctx, req.user_id)
    except PacerUnavailable as exc:
        log.warning("lane of %s not woken (the reconciler will): %s", req.user_id, exc)


def _release(ctx: Context, req: Snapshot, ticket: Ticket) -> None:
    try:
        ctx.pacer.settle(req.user_id, ticket.member, token=ticket.token)
        wake_lane(ctx, req.user_id)
    except PacerUnavailable as exc:
        log.warning("reservation of %s not released (it expires): %s", req.id, exc)


def _fail_without_call(ctx: Context, conn: Connection, req: Snapshot, message: str) -> None:
    try:
        ctx.ledger.transition(conn, req.id, WAITING, State.FAILED, last_message=message)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    ctx.pacer.remove(req.user_id, member(req))
    wake_lane(ctx, req.user_id)
