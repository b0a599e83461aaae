"""The Celery app, configured for durability; settings are read lazily, on first use."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError
from redis import RedisError

from worker.broker import TRANSPORT
from worker.consumer import CONSUMER
from worker.errors import PacerUnavailable
from worker.pacer import Wake, parse_member
from worker.redis_url import broker_url, is_sentinel
from worker.settings import get_settings

QUEUE = "spdist"
HOUSEKEEP_EVERY_S = 10.0
app = Celery("spdist")


def celery_config() -> dict[str, Any]:
    """Celery settings: late acks, prefetch 1, no silent loss on a lost worker."""
    s = get_settings()
    return {
        "broker_url": broker_url(s.redis_url),
        "broker_transport": transport_for(s.redis_url),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options(s.redis_url, s.redis_master_name),
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.1,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_soft_time_limit": s.lease_s + 30,
        "task_time_limit": s.lease_s + 60,
        "worker_send_task_events": True,
        # Task events in batches (worker/consumer.py): one PUBLISH per window, not per event.
        "worker_consumer": CONSUMER,
        "task_send_sent_event": True,
        "enable_utc": True,
        "imports": ("worker.tasks",),
        "beat_schedule": {
            "reconcile": {
                "task": "spdist.reconcile",
                "schedule": s.reconcile_every_s,
                # Generous: `expires` is read on the receiving worker's clock against the
                # beat's; a pass per period is enforced by the task itself (on Redis).
                "options": {"expires": max(60.0, 10 * s.reconcile_every_s)},
            },
            # Folds the /metrics deltas and prunes a few batches of expired history.
            "housekeep": {
                "task": "spdist.housekeep",
                "schedule": HOUSEKEEP_EVERY_S,
                "options": {"expires": HOUSEKEEP_EVERY_S},
            },
        },
    }


app.add_defaults(celery_config)


def transport_for(url: str) -> str | None:
    """kombu's Redis transport with one reused client (worker/broker.py) for `redis://`;
    None (kombu's choice by scheme) for anything else, `rediss://` included."""
    return TRANSPORT if url.partition("://")[0] == "redis" else None


def transport_options(url: str, master_name: str | None) -> dict[str, Any]:
    """The broker's transport options; with Sentinels, the master kombu asks them for."""
    options: dict[str, Any] = {"visibility_timeout": 3600}
    if is_sentinel(url):
        options["master_name"] = master_name
    return options


def send_dispatch(user_id: str, wake: Wake) -> None:
    """Send the dispatch message for a lane's head, due at the pacer's time."""
    from worker.outcomes import from_us
    from worker.reports import dispatch_repr

    _, request_id, project_id, upload_id = parse_member(wake.member)
    kwargs = {
        "request_id": request_id,
        "user_id": user_id,
        "project_id": project_id,
        "upload_id": upload_id,
        "due_us": wake.due_us,
    }
    eta = from_us(wake.due_us) if wake.delay_s > 0.002 else None
    try:
        app.send_task(
            "spdist.dispatch", kwargs=kwargs, eta=eta, queue=QUEUE, kwargsrepr=dispatch_repr(kwargs)
        )
    except (OperationalError, RedisError) as exc:
        raise PacerUnavailable(f"broker unreachable: {exc}") from exc
