"""SPDIST_REDIS_URL as a Sentinel URL: parsed once, given whole to kombu and to redis-py."""

from __future__ import annotations

import asyncio

import pytest
from kombu import Connection
from pydantic import ValidationError

from worker import redis_url
from worker.celery_app import transport_for, transport_options
from worker.cli import one_line
from worker.redis_url import SentinelUrl, broker_url, is_sentinel, parse, with_db
from worker.settings import Settings

THREE = "sentinel://h1:26379;sentinel://h2:26380;sentinel://h3/4"
SECRET = "p@ss;word/"  # characters a URL gives meaning to, escaped in the URL
WITH_PASSWORD = "sentinel://:p%40ss%3Bword%2F@h1:1;sentinel://h2:2/3"


def test_kombu_form_with_the_database_on_the_last_address() -> None:
    assert parse(THREE) == SentinelUrl((("h1", 26379), ("h2", 26380), ("h3", 26379)), db=4)
    assert parse("sentinel://10.0.0.1") == SentinelUrl((("10.0.0.1", 26379),), db=0)
    assert parse("sentinel://[::1]:5/2").sentinels == (("::1", 5),)


def test_the_password_may_be_written_once_on_any_address() -> None:
    target = parse(WITH_PASSWORD)
    assert (target.username, target.password, target.db) == (None, SECRET, 3)
    assert SECRET not in repr(target)
    named = parse("sentinel://h1:1;sentinel://ops:pw@h2:2/0")
    assert (named.username, named.password) == ("ops", "pw")


@pytest.mark.parametrize(
    "url",
    [
        "sentinel://h1:1;redis://h2:2/0",  # one address of another kind
        "sentinel://:1/0",  # no host
        "sentinel://h1:port/0",
        "sentinel://h1:1/zero",
        "sentinel://h1:1/0;sentinel://h2:2/1",  # two databases
        "sentinel://:a@h1:1;sentinel://:b@h2:2",  # two passwords
        "sentinel://h1:1;;sentinel://h2:2",
    ],
)
def test_malformed_sentinel_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse(url)
    assert url not in str(caught.value) and "h1" not in str(caught.value)


def test_which_urls_are_sentinel_urls() -> None:
    assert is_sentinel(THREE) and is_sentinel("SENTINEL://h:1")
    assert not is_sentinel("redis://localhost:6379/0") and not is_sentinel("rediss://h:1/0")


def test_every_address_of_the_broker_url_carries_the_database_and_password() -> None:
    url = broker_url(WITH_PASSWORD)
    assert url == "sentinel://:p%40ss%3Bword%2F@h1:1/3;sentinel://:p%40ss%3Bword%2F@h2:2/3"
    assert parse(url) == parse(WITH_PASSWORD)
    assert broker_url("redis://h:6379/2") == "redis://h:6379/2"


def test_kombu_keeps_database_and_password_when_it_moves_to_the_next_sentinel() -> None:
    # kombu reads them from the address in use, and moves on at each failed connection.
    conn = Connection(broker_url(WITH_PASSWORD), transport_options={"master_name": "m"})
    seen = []
    for _ in range(3):
        seen.append((conn.hostname, conn.port, conn.virtual_host, conn.password))
        conn.maybe_switch_next()
    assert seen == [("h1", 1, "3", SECRET), ("h2", 2, "3", SECRET), ("h1", 1, "3", SECRET)]
    assert conn.transport_cls == "sentinel"
    assert SECRET not in conn.as_uri()


def test_another_database() -> None:
    assert (
        with_db(THREE, 15) == "sentinel://h1:26379/15;sentinel://h2:26380/15;sentinel://h3:26379/15"
    )
    assert with_db("redis://h:6379/0", 15) == "redis://h:6379/15"


def test_a_sentinel_url_without_a_master_name_is_one_clear_line() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(redis_url=WITH_PASSWORD)
    line = one_line(caught.value)
    assert "SPDIST_REDIS_URL" in line and "SPDIST_REDIS_MASTER_NAME" in line
    assert "\n" not in line and "p%40ss" not in line and SECRET not in line
    with pytest.raises(ValidationError) as malformed:
        Settings(redis_url="sentinel://:secret@h1:x/0", redis_master_name="m")
    assert "SPDIST_REDIS_URL" in one_line(malformed.value)
    assert "secret" not in one_line(malformed.value)
    assert Settings(redis_url=THREE, redis_master_name="m").redis_master_name == "m"
    assert Settings(redis_master_name="").redis_master_name is None


def test_the_broker_asks_the_sentinels_for_the_named_master() -> None:
    assert transport_for(THREE) is None  # kombu's own `sentinel://` transport
    assert transport_options(THREE, "mymaster") == {
        "visibility_timeout": 3600,
        "master_name": "mymaster",
    }
    assert transport_options("redis://h:1/0", None) == {"visibility_timeout": 3600}


def test_clients_ask_for_the_master_with_its_database_and_password() -> None:
    # No command is sent: building a client does not connect.
    client = redis_url.sync_client(WITH_PASSWORD, "mymaster", socket_timeout=5)
    pool = client.connection_pool
    assert isinstance(client, redis_url.SentinelMaster)
    assert (pool.service_name, pool.is_master) == ("mymaster", True)  # type: ignore[attr-defined]
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (3, SECRET, 5)
    sentinels = pool.sentinel_manager.sentinels  # type: ignore[attr-defined]
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
    client.close()
    aclient = redis_url.async_client(WITH_PASSWORD, "mymaster", socket_timeout=5)
    assert aclient.connection_pool.connection_kwargs["db"] == 3
    assert aclient.connection_pool.service_name == "mymaster"  # type: ignore[attr-defined]
    asyncio.run(aclient.aclose())


def test_no_client_without_a_master_name() -> None:
    with pytest.raises(ValueError, match="SPDIST_REDIS_MASTER_NAME"):
        redis_url.sync_client(THREE)
    with pytest.raises(ValueError, match="SPDIST_REDIS_MASTER_NAME"):
        redis_url.async_client(THREE, "")
