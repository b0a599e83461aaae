"""What the service functions need, made in one place: `build_context`.

The app (`get_context`), the tests and the benchmark all build their context with it,
choosing what to put in each seam: the pacer's Redis client, the sender of dispatch
messages, the HTTP transport to Streampixel, the database engine, the claim lease and the
test hooks (`Hooks`: a point where a fault test stops a process). A child process started by
a test gets its seams from the environment (`SPDIST_CONTEXT_SEAMS`, below), not by having
its modules patched.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import httpx
import redis
import redis.asyncio as aredis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker import redis_url
from worker.ledger import Ledger, for_engine
from worker.pacer import Pacer, Wake
from worker.settings import KeyRing, Settings, get_keyring, get_settings
from worker.streampixel import StreampixelClient

# Sends a dispatch message for a lane's head: (user_id, wake) -> None.
Sender = Callable[[str, Wake], None]


@dataclass(frozen=True)
class Hooks:
    """Points in a dispatch where a fault test may stop the process; no-ops in production.

    before_claim(upload_id)  after the slot is reserved, before the claim's SQL
    after_fire(member)       after the slot is taken (fired), before the call is sent
    """

    before_claim: Callable[[str], None] = lambda upload_id: None
    after_fire: Callable[[str], None] = lambda member: None


@dataclass
class Context:
    """Settings, the database, the pacer, the Streampixel client and the sender of messages."""

    settings: Settings
    sessions: sessionmaker[Session]
    pacer: Pacer
    keyring: KeyRing
    send: Sender
    engine: Engine
    ledger: Ledger
    lease_s: float
    hooks: Hooks = field(default_factory=Hooks)
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

    @property
    def autocommit(self) -> Engine:
        """The engine's autocommit twin on PostgreSQL (single statements, no BEGIN); the
        engine itself elsewhere."""
        from worker.db import autocommit_engine

        return autocommit_engine(self.engine)

    def close(self) -> None:
        """Close what the context opened: its Redis client and its database pools."""
        from worker.db import dispose

        self.pacer.redis.close()
        dispose(self.engine)


def default_client(
    settings: Settings, transport: httpx.BaseTransport | None = None
) -> StreampixelClient:
    """The client for SPDIST_STREAMPIXEL_URL with the configured timeouts."""
    return StreampixelClient(
        settings.streampixel_url,
        timeout_s=settings.http_timeout_s,
        connect_timeout_s=settings.http_connect_timeout_s,
        transport=transport,
    )


def build_context(
    settings: Settings,
    *,
    redis_client: redis.Redis | None = None,
    send: Sender | None = None,
    transport: httpx.BaseTransport | None = None,
    engine: Engine | None = None,
    keyring: KeyRing | None = None,
    lease_s: float | None = None,
    hooks: Hooks | None = None,
) -> Context:
    """A context for `settings`; each seam left out gets what production uses: the Redis
    (or Sentinel master) of SPDIST_REDIS_URL, Celery's sender, a real HTTP transport, an
    engine for SPDIST_DATABASE_URL, the configured keys and lease, no hooks."""
    from worker.db import make_engine

    if send is None:
        from worker.celery_app import send_dispatch

        send = send_dispatch
    engine = engine or make_engine(settings.database_url)
    client = redis_client or make_redis(settings.redis_url, settings.redis_master_name)
    return Context(
        settings=settings,
        sessions=sessionmaker(engine, expire_on_commit=False),
        pacer=make_pacer(settings, client),
        keyring=keyring or KeyRing(settings),
        send=send,
        engine=engine,
        ledger=for_engine(engine),
        lease_s=settings.lease_s if lease_s is None else lease_s,
        hooks=hooks or Hooks(),
        client_factory=None if transport is None else lambda: default_client(settings, transport),
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
    """The process's context, built from the environment on first use.

    SPDIST_CONTEXT_SEAMS=`module:function` (tests only: the system tests set it in the
    processes they start) names a function returning keyword arguments of `build_context`
    (a shorter lease, hooks), read from that process's environment."""
    from worker.db import get_engine

    seams: dict[str, Any] = {}
    named = os.environ.get("SPDIST_CONTEXT_SEAMS")
    if named:
        module, _, function = named.partition(":")
        seams = getattr(importlib.import_module(module), function)()
    return build_context(get_settings(), engine=get_engine(), keyring=get_keyring(), **seams)
