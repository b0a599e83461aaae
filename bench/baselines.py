"""The baselines spdist is measured against: a bare Celery task and a bare FastAPI route.

Both do only what spdist must do at the least: the Celery task makes the same httpx POST
to distribute-file (no SQL, no pacer); the route parses the same body and returns it.
Environment: BENCH_BROKER_URL (Redis), BENCH_SP_URL (the fake's base URL).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import httpx
from celery import Celery
from fastapi import FastAPI

from api.schemas import DistributionIn

QUEUE = "bench"
celery_app = Celery("bench", broker=os.environ.get("BENCH_BROKER_URL", "redis://localhost:6379/0"))
celery_app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)
# BENCH_WORKER_SETTINGS=spdist: the worker settings spdist runs with (late acks, prefetch 1,
# task events for Flower), so the throughput baseline is "a bare task on the same workers";
# unset: Celery's defaults (early acks, prefetch 4, no events), reported beside it.
WORKER_SETTINGS = (
    "task_acks_late",
    "task_reject_on_worker_lost",
    "worker_prefetch_multiplier",
    "worker_send_task_events",
    "task_send_sent_event",
)
# BENCH_WORKER_SETTINGS=spdist-plumbing: those settings, and spdist's changes to Celery's
# plumbing too (worker/broker.py: one Redis client per pool instead of one per command;
# worker/consumer.py: task events in batches), for scale.
if os.environ.get("BENCH_WORKER_SETTINGS", "").startswith("spdist"):
    from worker.celery_app import celery_config

    spdist = celery_config()
    celery_app.conf.update({name: spdist[name] for name in WORKER_SETTINGS})
    if os.environ["BENCH_WORKER_SETTINGS"] == "spdist-plumbing":
        celery_app.conf.broker_transport = spdist["broker_transport"]
        celery_app.conf.worker_consumer = spdist["worker_consumer"]


@lru_cache
def _client() -> httpx.Client:
    """One keep-alive client per process, as spdist's worker keeps one."""
    return httpx.Client(
        base_url=os.environ["BENCH_SP_URL"],
        timeout=httpx.Timeout(30.0, connect=5.0),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )


def _post(user_id: str, project_id: str, upload_id: str) -> int:
    payload = {
        "apiKey": f"key-{user_id}",
        "userId": user_id,
        "projectId": project_id,
        "uploadId": upload_id,
    }
    return _client().post("/projects/distribute-file", json=payload).status_code


@celery_app.task(name="bench.post")
def post(user_id: str, project_id: str, upload_id: str) -> int:
    """The same POST spdist makes, and nothing else."""
    return _post(user_id, project_id, upload_id)


@celery_app.task(name="bench.post_limited", rate_limit=os.environ.get("BENCH_RATE_LIMIT", "1/s"))
def post_limited(user_id: str, project_id: str, upload_id: str) -> int:
    """The same POST under Celery's own rate limit (per worker node, per task type)."""
    return _post(user_id, project_id, upload_id)


@lru_cache
def _redis() -> Any:
    import redis

    return redis.Redis.from_url(os.environ["BENCH_BROKER_URL"])


@celery_app.task(name="bench.post_locked", bind=True, max_retries=None)
def post_locked(self: Any, user_id: str, project_id: str, upload_id: str) -> int:
    """The common do-it-yourself answer: a per-user lock held for the interval (SET NX PX),
    and a retry with the lock's remaining time as countdown while another call holds it."""
    interval_ms = int(float(os.environ.get("BENCH_INTERVAL_S", "1")) * 1000)
    lock = f"bench:lock:{user_id}"
    if not _redis().set(lock, "1", nx=True, px=interval_ms):
        raise self.retry(countdown=max(1, int(_redis().pttl(lock))) / 1000)
    return _post(user_id, project_id, upload_id)


api_app = FastAPI(title="bench-baseline")


@api_app.post("/v1/distributions", status_code=202)
def echo(body: DistributionIn) -> dict[str, Any]:
    """Parse the body with spdist's own schema and return it."""
    return body.model_dump()
