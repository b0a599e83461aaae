"""SPDIST_REDIS_URL read in one place: one Redis server, or a master found through Sentinel.

`redis://host:6379/0` (or `rediss://`) names one server. A Sentinel URL, in kombu's form,
names the Sentinels that watch the master called SPDIST_REDIS_MASTER_NAME:

    sentinel://h1:26379;sentinel://h2:26379;sentinel://h3:26379/0
    sentinel://:password@h1:26379;sentinel://h2:26379/0

The database and the password may be written on any one of the addresses (once); they are
the master's, as kombu reads them. Every client here asks the Sentinels where the master is
and asks again when it stops answering as one (redis-py's `Sentinel`; the broker uses
kombu's `sentinel://` transport with the URL of `broker_url`), so a failover needs nothing
of ours: scripts registered with `register_script` are loaded again on the new master when
it answers NOSCRIPT.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

SCHEME = "sentinel"
DEFAULT_PORT = 26379
# Asking a Sentinel is one small command: a dead one should cost a second, not the
# master's own timeout, before the next one is asked.
SENTINEL_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class SentinelUrl:
    """The Sentinels' addresses, and the database and credentials of their master."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def is_sentinel(url: str) -> bool:
    """Whether `url` names Sentinels rather than one Redis server."""
    return url.partition("://")[0].lower() == SCHEME


def parse(url: str) -> SentinelUrl:
    """The parts of a Sentinel URL; ValueError (never echoing the URL) when it is not one."""
    sentinels: list[tuple[str, int]] = []
    dbs: set[int] = set()
    credentials: set[tuple[str | None, str | None]] = set()
    for part in url.split(";"):
        host, port, db, user, password = _address(part.strip())
        sentinels.append((host, port))
        if db is not None:
            dbs.add(db)
        if user is not None or password is not None:
            credentials.add((user, password))
    if len(dbs) > 1 or len(credentials) > 1:
        raise ValueError("a Sentinel URL gives one database and one password, not several")
    user, password = next(iter(credentials), (None, None))
    return SentinelUrl(tuple(sentinels), next(iter(dbs), 0), user, password)


def _address(part: str) -> tuple[str, int, int | None, str | None, str | None]:
    parts = urlsplit(part)
    if parts.scheme.lower() != SCHEME or not parts.hostname:
        raise ValueError("each address of a Sentinel URL looks like sentinel://host:port")
    try:
        port = parts.port or DEFAULT_PORT
        path = parts.path.strip("/")
        db = int(path) if path else None
    except ValueError:
        raise ValueError("a Sentinel URL's port and database are numbers") from None
    if db is not None and db < 0:
        raise ValueError("a Sentinel URL's database is a number from 0")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname, port, db, user, password


def broker_url(url: str) -> str:
    """The URL for Celery: a Sentinel URL with the database and password on every address.

    kombu reads them from the address it is connected to, and moves to the next one in the
    list whenever a connection fails (a failover): each must carry them."""
    return render(parse(url)) if is_sentinel(url) else url


def with_db(url: str, db: int) -> str:
    """`url` with another database number."""
    if is_sentinel(url):
        return render(replace(parse(url), db=db))
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def render(target: SentinelUrl) -> str:
    """A Sentinel URL in kombu's form, the database and password on every address."""
    auth = ""
    if target.username is not None or target.password is not None:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password or '', safe='')}@"
    hosts = [(f"[{host}]" if ":" in host else host, port) for host, port in target.sentinels]
    return ";".join(f"{SCHEME}://{auth}{host}:{port}/{target.db}" for host, port in hosts)


def _master_kwargs(target: SentinelUrl, options: dict[str, Any]) -> dict[str, Any]:
    return {"db": target.db, "username": target.username, "password": target.password, **options}


def _need_master(master_name: str | None) -> str:
    if not master_name:
        raise ValueError("SPDIST_REDIS_URL is a Sentinel URL: set SPDIST_REDIS_MASTER_NAME")
    return master_name


class SentinelMaster(redis.Redis):
    """The master's client; closing it also closes its connections to the Sentinels."""

    def close(self) -> None:
        super().close()
        cast(Any, self.connection_pool).sentinel_manager.close()


class AsyncSentinelMaster(aredis.Redis):
    """The master's asyncio client; closing it also closes its connections to the Sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        await cast(Any, self.connection_pool).sentinel_manager.aclose()


def sync_client(url: str, master_name: str | None = None, **options: Any) -> redis.Redis:
    """A client of the server `url` names, or of the master its Sentinels name."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    name, target = _need_master(master_name), parse(url)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=_sentinel_kwargs())
    return sentinel.master_for(name, SentinelMaster, **_master_kwargs(target, options))


def async_client(url: str, master_name: str | None = None, **options: Any) -> aredis.Redis:
    """`sync_client` for asyncio (redis.asyncio), side by side."""
    if not is_sentinel(url):
        return aredis.Redis.from_url(url, **options)
    name, target = _need_master(master_name), parse(url)
    sentinel = AsyncSentinel(list(target.sentinels), sentinel_kwargs=_sentinel_kwargs())
    master = sentinel.master_for(name, AsyncSentinelMaster, **_master_kwargs(target, options))
    return cast(aredis.Redis, master)


def _sentinel_kwargs() -> dict[str, Any]:
    return {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S}
