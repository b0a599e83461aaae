"""The Redis transport that builds one synchronous client per connection pool."""

from __future__ import annotations

from kombu import Connection

from worker.broker import TRANSPORT, Channel
from worker.celery_app import app, transport_for


def test_one_client_per_pool_and_a_new_one_with_a_new_pool() -> None:
    # No command is sent: building clients and pools does not connect.
    with Connection("redis://127.0.0.1:6379/15", transport=TRANSPORT) as conn:
        channel = conn.channel()
        assert isinstance(channel, Channel)
        first = channel._create_client()
        assert channel._create_client() is first
        with channel.conn_or_acquire() as client:  # what ack, publish and events use
            assert client is first
        channel._disconnect_pools()  # what kombu does on a lost connection
        second = channel._create_client()
        assert second is not first and second.connection_pool is channel.pool
        assert channel._create_client(asynchronous=True) is not second  # the loop's own
        channel.close()


def test_used_for_redis_urls_only() -> None:
    assert transport_for("redis://localhost:6379/0") == TRANSPORT
    assert transport_for("rediss://localhost:6380/0") is None
    assert transport_for("amqp://guest@localhost//") is None
    assert app.conf.broker_transport == transport_for(app.conf.broker_url)
