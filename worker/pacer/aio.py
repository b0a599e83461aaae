"""The pacer's enqueue for an asyncio caller (the API's batched path): the same wake.lua,
the same keys and arguments as `Pacer.enqueue`, on a redis.asyncio client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.pacer import keys
from worker.pacer.lanes import Pacer, Placed, load_script, placed_from

Entry = tuple[str, str, int, str | None]  # user_id, member, score, member it replaces


class AsyncLanes:
    """Puts requests in their lanes from the event loop, many in one round trip."""

    def __init__(self, pacer: Pacer, client: Any) -> None:
        self.pacer = pacer  # its settings (lead, countdown, grace, ttl), never its client
        self.redis = client
        self._wake = client.register_script(load_script("wake.lua"))

    async def enqueue_many(self, entries: Sequence[Entry]) -> list[Placed | Exception]:
        """Each entry put in its lane and the lane woken, as `Pacer.enqueue` does: one
        pipeline. A reply Redis refused is that entry's exception; a lost connection raises."""
        pipe = self.redis.pipeline(transaction=False)
        for user_id, member, score, replaces in entries:
            args = self.pacer.wake_args(add=(member, score), replaces=replaces)
            await self._wake(keys=keys.lane_keys(user_id), args=args, client=pipe)
        answers = await pipe.execute(raise_on_error=False)
        return [a if isinstance(a, Exception) else placed_from(a) for a in answers]

    async def aclose(self) -> None:
        await self.redis.aclose()
