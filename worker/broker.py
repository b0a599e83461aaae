"""kombu's Redis transport, building its synchronous Redis client once per connection pool.

Outside its event loop kombu's Redis channel builds a new `redis.Redis` for every command
it sends: each acknowledgement, each entry in the unacked index, each batch of task events
for Flower, each published message. redis-py's constructor rebuilds a table of some 170
response callbacks every time (redis/redis-py#3624, open), and in a worker's main process
that was the largest single cost of a dispatch. A client holds no connection of its own
(each command checks one out of the channel's pool, which is what kombu relies on), so one
client per pool serves every caller; a new pool (kombu drops its pools on a lost
connection) gets a new client.

Used for `redis://` broker URLs (`worker.celery_app.transport_for`); other schemes keep
kombu's own transport.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

TRANSPORT = "worker.broker:Transport"


class Channel(kombu_redis.Channel):
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
