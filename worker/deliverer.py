"""The callback deliverer: POSTs the outbox's due tries (callback_deliveries) to callers.

Run by `spdist beat` in a few threads of their own, on connections of their own: nothing a
dispatch or a lane does waits on it, and a receiver that never answers only keeps one of
these threads for SPDIST_CALLBACK_TIMEOUT_S (10 s).

A try is claimed by setting `claimed_until` (a lease, by the ledger's `take`: PostgreSQL
picks rows with `FOR UPDATE SKIP LOCKED`, SQLite with a conditional update) and is
finished only by the claim that still holds that lease: a try whose lease ran out (its
deliverer killed or stopped) is claimed again and sent again — delivered at least once. A
try is due only when every earlier event of its request is finished (delivered, or given
up): events arrive in order.
A failed try's row is finished and the next try written in one transaction.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
from sqlalchemy import Connection, Table, and_, exists, insert, select, update
from sqlalchemy.orm import aliased, selectinload

from worker import callbacks, views
from worker.context import Context
from worker.models import CallbackDelivery, DistributionRequest, utcnow

log = logging.getLogger(__name__)
C = cast(Table, CallbackDelivery.__table__).c
DELIVERIES = cast(Table, CallbackDelivery.__table__)
BATCH = 8
IDLE_WAIT_S = 0.5


@dataclass(frozen=True)
class Claimed:
    """A try this deliverer holds until `lease` (the value it wrote to claimed_until)."""

    id: int
    request_id: str
    event_no: int
    event: str
    try_no: int
    body: str | None
    expires_at: datetime | None
    lease: datetime


def due_filter(now: datetime) -> Any:
    """Open tries that are due, unclaimed (or whose lease ran out), with no earlier event of
    their request still open."""
    earlier = aliased(CallbackDelivery)
    return and_(
        C.finished_at.is_(None),
        C.due_at <= now,
        (C.claimed_until.is_(None)) | (C.claimed_until < now),
        ~exists().where(
            earlier.request_id == C.request_id,
            earlier.event_no < C.event_no,
            earlier.finished_at.is_(None),
        ),
    )


def claim(conn: Connection, ctx: Context, limit: int = BATCH) -> list[Claimed]:
    """Take up to `limit` due tries for ctx.settings.callback_lease_s; commits."""
    now = utcnow()
    lease = now + timedelta(seconds=ctx.settings.callback_lease_s)
    columns = (C.id, C.request_id, C.event_no, C.event, C.try_no, C.body, C.expires_at)
    values = {"claimed_until": lease, "started_at": now}
    rows = ctx.ledger.take(conn, DELIVERIES, due_filter(now), C.due_at, values, columns, limit)
    return [Claimed(**r._mapping, lease=lease) for r in rows]


def held(claimed: Claimed) -> Any:
    """This claim's row, while it still holds its lease."""
    return and_(C.id == claimed.id, C.claimed_until == claimed.lease, C.finished_at.is_(None))


def freeze_body(ctx: Context, conn: Connection, claimed: Claimed) -> Claimed | None:
    """An event's first try: its body built from SQL and stored (every later try sends these
    bytes), and the 24 h horizon set. None when the lease is gone."""
    if claimed.body is not None:
        return claimed
    with ctx.sessions() as session:
        req = session.get(
            DistributionRequest,
            claimed.request_id,
            options=[selectinload(DistributionRequest.attempts)],
        )
        if req is None:  # cannot be: the try is deleted with its request
            return None
        distribution = views.distribution_dict(req)
    # The state the event names: the request may have moved on since (confirmed after
    # succeeded); that later change has an event of its own.
    distribution["state"] = claimed.event.removeprefix("distribution.")
    body = callbacks.body_bytes(claimed.event, distribution).decode()
    expires = utcnow() + timedelta(seconds=ctx.settings.callback_expire_s)
    done = conn.execute(
        update(DELIVERIES).where(held(claimed)).values(body=body, expires_at=expires)
    ).rowcount
    conn.commit()
    if not done:
        return None
    return Claimed(**{**claimed.__dict__, "body": body, "expires_at": expires})


def post(ctx: Context, client: httpx.Client, url: str, claimed: Claimed) -> tuple[int | None, str]:
    """One POST of the try's body: (HTTP status or None, a short reason). Never raises for
    the receiver's faults; the reason names no secret and no response body."""
    assert claimed.body is not None
    body = claimed.body.encode()
    secret = ctx.settings.callback_secret
    headers = {
        "Content-Type": "application/json",
        callbacks.EVENT_HEADER: claimed.event,
        callbacks.DELIVERY_HEADER: f"{claimed.request_id}:{claimed.event_no}",
    }
    if secret is not None:
        headers[callbacks.SIGNATURE_HEADER] = callbacks.signature(secret.get_secret_value(), body)
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, type(exc).__name__
    return response.status_code, f"HTTP {response.status_code}"


def finish(
    ctx: Context, conn: Connection, claimed: Claimed, status: int | None, reason: str
) -> str | None:
    """Record the try's outcome and, when it failed with time left, write the next try;
    one transaction. The outcome, or None when the lease was lost (another claim owns it)."""
    now = utcnow()
    if status is not None and 200 <= status < 300:
        outcome = "delivered"
        following = None
    else:
        following = callbacks.next_try_at(ctx.settings, claimed.try_no, now)
        expires = claimed.expires_at or now
        outcome = "failed" if following <= expires else "expired"
    with conn.begin():
        done = conn.execute(
            update(DELIVERIES)
            .where(held(claimed))
            .values(
                finished_at=now,
                http_status=status,
                outcome=outcome,
                error=None if outcome == "delivered" else reason,
                claimed_until=None,
            )
        ).rowcount
        if not done:
            return None
        if outcome == "failed":
            conn.execute(
                insert(DELIVERIES).values(
                    request_id=claimed.request_id,
                    event_no=claimed.event_no,
                    event=claimed.event,
                    try_no=claimed.try_no + 1,
                    body=claimed.body,
                    created_at=now,
                    due_at=following,
                    expires_at=claimed.expires_at,
                )
            )
    return outcome


def deliver(ctx: Context, client: httpx.Client, claimed: Claimed) -> str | None:
    """Freeze the body if need be, POST it, record the outcome."""
    with ctx.engine.connect() as conn:
        url = conn.scalar(
            select(DistributionRequest.callback_url).where(
                DistributionRequest.id == claimed.request_id
            )
        )
        conn.commit()
        ready = freeze_body(ctx, conn, claimed)
        if ready is None or url is None:
            return None
    status, reason = post(ctx, client, url, ready)  # no connection held while it waits
    with ctx.engine.connect() as conn:
        outcome = finish(ctx, conn, ready, status, reason)
    if outcome is not None and outcome != "delivered":
        log.info(
            "callback %s of %s try %d: %s (%s)",
            ready.event,
            ready.request_id,
            ready.try_no,
            outcome,
            reason,
        )
    return outcome


def client_for(ctx: Context) -> httpx.Client:
    """10 s for the whole answer; a redirect is an answer (not 2xx), never followed."""
    return httpx.Client(timeout=ctx.settings.callback_timeout_s, follow_redirects=False)


def run_once(ctx: Context, client: httpx.Client, limit: int = BATCH) -> int:
    """Claim and deliver one batch; how many tries it made."""
    with ctx.engine.connect() as conn:
        batch = claim(conn, ctx, limit)
    for claimed in batch:
        deliver(ctx, client, claimed)
    return len(batch)


def loop(ctx: Context, stop: threading.Event) -> None:
    """Deliver until `stop` is set; a fault (database down) is logged and waited out."""
    with client_for(ctx) as client:
        while not stop.is_set():
            try:
                made = run_once(ctx, client, limit=1)
            except Exception:  # noqa: BLE001 - the loop outlives a database restart
                log.exception("callback deliverer: pass failed; trying again")
                made = 0
            if not made:
                stop.wait(IDLE_WAIT_S)


def start(ctx: Context, threads: int | None = None) -> threading.Event:
    """Start the deliverer's daemon threads; set the returned event to stop them."""
    stop = threading.Event()
    for n in range(threads or ctx.settings.callback_threads):
        threading.Thread(target=loop, args=(ctx, stop), name=f"callbacks-{n}", daemon=True).start()
    return stop
