"""Celery tasks: thin wrappers that turn errors into retries."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from celery import Task
from celery.signals import worker_process_init
from redis import RedisError
from sqlalchemy.exc import SQLAlchemyError

from worker import dispatch as dispatch_mod
from worker import reconcile as reconcile_mod
from worker import reports
from worker.celery_app import app
from worker.context import Context, get_context
from worker.errors import PacerUnavailable
from worker.outcomes import from_us
from worker.pacer import US, keys

log = logging.getLogger(__name__)
RETRY_S = 2.0


# Strategy: ETAs are read on the Redis clock (the pacer's), not this host's (worker/clock.py).
# throws: a failed call is an expected end, logged in one line (worker/reports.py).
@app.task(
    name="spdist.dispatch",
    bind=True,
    max_retries=None,
    acks_late=True,
    Strategy="worker.clock:strategy",
    throws=(reports.CallFailed,),
)
def dispatch(
    self: Task,
    request_id: str,
    user_id: str = "",
    project_id: str = "",
    upload_id: str = "",
    due_us: int | None = None,
) -> str:
    """Dispatch `request_id` when its lane's slot comes; user/project/upload are for Flower."""
    if not isinstance(request_id, str) or not isinstance(due_us, int | None):
        log.error("malformed dispatch message dropped: request_id=%r due_us=%r", request_id, due_us)
        return "malformed"
    try:
        word = dispatch_mod.dispatch(get_context(), request_id, due_us=due_us, user_id=user_id)
    except (PacerUnavailable, SQLAlchemyError) as exc:
        log.warning("dispatch of %s postponed: %s", request_id, exc)
        # If Redis is down this retry is lost too; SQL still holds the request and the
        # reconciler sends it again.
        raise self.retry(exc=exc, eta=retry_eta(get_context(), RETRY_S)) from exc
    return reports.report(get_context(), request_id, word)  # raises for Flower: no new message


def retry_eta(ctx: Context, seconds: float) -> datetime:
    """`seconds` from now on the Redis clock, the one workers read dispatch ETAs on
    (worker/clock.py); Celery's `countdown` would use this host's clock, minutes off if it
    is. This host's clock only when Redis cannot be read (the broker is that Redis)."""
    try:
        return from_us(ctx.pacer.now_us() + int(seconds * US))
    except PacerUnavailable:
        return datetime.now(UTC) + timedelta(seconds=seconds)


# send_events=False: a tick a second would bury the dispatches in Flower (beat, which sends
# only these, sends no task-sent event either: worker/cli.py).
@app.task(name="spdist.reconcile", acks_late=False, send_events=False)
def reconcile() -> dict[str, int]:
    """Send what SQL says is due but no message carries; one pass per period, however many
    reconcile messages arrive (two beats by mistake, a backlog after the workers were down)."""
    ctx = get_context()
    if not _take_turn(ctx):
        return {"skipped": 1}
    counts = reconcile_mod.reconcile(ctx)
    _heartbeat(ctx)
    return counts


def _heartbeat(ctx: Context) -> None:
    """Record the pass for `spdist_reconcile_last_run_timestamp_seconds` (the alert on a
    scheduler that stopped)."""
    try:
        ctx.pacer.redis.set(keys.reconcile_last(), ctx.pacer.now_us())
    except (RedisError, PacerUnavailable) as exc:
        log.info("reconcile heartbeat not written: %s", type(exc).__name__)


def _take_turn(ctx: Context) -> bool:
    ttl_ms = max(1, int(ctx.settings.reconcile_every_s * 800))
    try:
        return bool(ctx.pacer.redis.set(keys.reconcile_turn(), ctx.worker_name, nx=True, px=ttl_ms))
    except RedisError:
        return True  # the pass meets the same error and says so


@app.task(name="spdist.housekeep", acks_late=False)
def housekeep() -> dict[str, int]:
    """Fold the /metrics deltas into their totals; prune expired history, a few batches."""
    from worker import retention, tallies

    ctx = get_context()
    with ctx.engine.connect() as conn:
        folded = tallies.compact_all(ctx.ledger, conn)
    return {"folded": folded, **retention.scheduled(ctx).rows}


@app.task(name="spdist.enqueue", acks_late=True)
def enqueue(**body: object) -> dict[str, object]:
    """`send_task("spdist.enqueue", kwargs={"userId", "projectId", "uploadId", ...})`.

    The API's validation and SQL record; invalid input is logged and answered with
    `{"error": ..., "field": ...}`, never retried.
    """
    from worker import distributions

    return distributions.enqueue_message(get_context(), dict(body))


@app.task(
    name="spdist.webhook",
    bind=True,
    max_retries=10,
    acks_late=True,
    Strategy="worker.clock:strategy",
)
def webhook(
    self: Task, event_id: int, event: str = "", upload_id: str = "", project_id: str = ""
) -> str:
    """Act on stored webhook event `event_id`; event/upload/project are for Flower."""
    from worker import webhooks

    try:
        return webhooks.process(get_context(), event_id)
    except SQLAlchemyError as exc:
        log.warning("webhook event %s postponed: %s", event_id, exc)
        raise self.retry(exc=exc, eta=retry_eta(get_context(), RETRY_S)) from exc


@worker_process_init.connect
def warm_up(**_: object) -> None:
    """Pay each pool process's first-use costs (settings, the HTTP client and its TLS
    context, the Lua scripts, a database connection) before its first slot, not inside it."""
    try:
        ctx = get_context()
        ctx.client  # noqa: B018
        ctx.pacer.load_scripts()
        with ctx.autocommit.connect():  # the dispatch's pool
            pass
    except Exception as exc:  # the first task will meet the same problem and retry
        log.warning("warm-up incomplete: %s", exc)
