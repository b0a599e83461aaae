"""What the service functions need, bundled so tests can build their own."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import redis
import redis.asyncio as aredis
from sqlalchemy.orm import Session, sessionmaker

from worker import redis_url
from worker.pacer import Pacer, Wake
from worker.settings import KeyRing, Settings, get_keyring, get_settings
from worker.streampixel import StreampixelClient

# Sends a dispatch message for a lane's head: (user_id, wake) -> None.
Publisher = Callable[[str, Wake], None]


@dataclass
class Context:
    """Settings, the database, the pacer, the Streampixel client and the publisher."""

    settings: Settings
    sessions: sessionmaker[Session]
    pacer: Pacer
    keyring: KeyRing
    publish: Publisher
    client_factory: Callable[[], StreampixelClient] | None = None
    worker_name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _client: StreampixelClient | None = None

    @property
    def client(self) -> StreampixelClient:
        """One Streampixel client per process: its keep-alive connection saves a handshake."""
        if self._client is None:
            factory = self.client_factory or (lambda: default_client(self.settings))
            self._client = factory()
        return self._client


def default_client(settings: Settings) -> StreampixelClient:
    """The client for SPDIST_STREAMPIXEL_URL with the configured timeouts."""
    return StreampixelClient(
        settings.streampixel_url,
        timeout_s=settings.http_timeout_s,
        connect_timeout_s=settings.http_connect_timeout_s,
    )


def make_pacer(settings: Settings, client: redis.Redis) -> Pacer:
    """A pacer with the configured interval, guard and lead."""
    return Pacer(
        client,
        interval_s=settings.min_interval_s,
        guard_s=settings.guard_s,
        lead_s=settings.pacer_lead_s,
        max_late_s=settings.pacer_max_late_s,
        send_window_s=settings.pacer_send_window_s,
        max_countdown_s=settings.max_countdown_s,
    )


# A client that fails fast: the pacer must not hang a worker, nor the API's enqueue.
REDIS_OPTIONS: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5}


def make_redis(url: str, master_name: str | None = None) -> redis.Redis:
    """The pacer's Redis client: of the server `url` names, or of the master its Sentinels
    name (then it follows the master through a failover)."""
    return redis_url.sync_client(url, master_name, health_check_interval=30, **REDIS_OPTIONS)


def make_async_redis(url: str, master_name: str | None = None) -> aredis.Redis:
    """`make_redis` for asyncio, for the API's enqueue on the event loop."""
    return redis_url.async_client(url, master_name, **REDIS_OPTIONS)


@lru_cache
def get_context() -> Context:
    """The process's context, built from the environment on first use."""
    from worker.celery_app import publish_dispatch
    from worker.db import get_sessionmaker

    settings = get_settings()
    return Context(
        settings=settings,
        sessions=get_sessionmaker(),
        pacer=make_pacer(settings, make_redis(settings.redis_url, settings.redis_master_name)),
        keyring=get_keyring(),
        publish=publish_dispatch,
    )
