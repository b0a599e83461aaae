"""The per-user pacer: one lane per userId in Redis, shared by every worker.

A lane is a sorted set of waiting requests (highest priority first, then oldest) and a
small hash of pacing state. Every decision is one Lua script (scripts/) on the Redis
server's clock, so workers on machines with skewed clocks still agree. Its verbs:

    enqueue  put a new request in its lane and wake the lane (wake.lua)
    wake     which head needs a dispatch message, and when (wake.lua)
    reserve  the head of the lane gets the next slot (at most `lead` ahead of time)
    fire     right before the HTTP call: the next slot opens `interval` after *now*
    settle   after the call: keep, requeue (a 429 keeps the head) or drop; push next_free
    idle     which of many lanes have no dispatch message in flight (the reconciler)

Any Redis error, or an answer of a kind it does not know, surfaces as PacerUnavailable:
the caller makes no call (fail closed).

Keys and topology (keys.py): every key of one lane carries the userId as a hash tag, so a
script that touches one lane touches one slot. Scripts name every key they touch in KEYS,
never build one from ARGV. spdist runs on one Redis, or a Sentinel-managed primary with
replicas; Redis Cluster is not supported (idle.lua and next_free.lua take many lanes in
one call, which a cluster would refuse across slots).

`aio.AsyncLanes` is the enqueue for asyncio callers: the same script, keys and arguments.
"""

from worker.pacer.lanes import (
    KINDS,
    US,
    Pacer,
    Placed,
    Reply,
    ReplyKind,
    SettleAction,
    Wake,
    lane_member,
    load_script,
    parse_member,
    placed_from,
)

__all__ = [
    "KINDS",
    "US",
    "Pacer",
    "Placed",
    "Reply",
    "ReplyKind",
    "SettleAction",
    "Wake",
    "lane_member",
    "load_script",
    "parse_member",
    "placed_from",
]
