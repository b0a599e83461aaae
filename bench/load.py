"""Load generator for scenario 3, run as its own process: N concurrent clients POST bodies.

    python -m bench.load URL --token T --users U1,U2 --concurrency 32 --seconds 5 --warmup 1

Prints one JSON line: requests, errors, statuses, rps, p50/p99 latency in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import Counter

import httpx


async def _client(url: str, headers: dict[str, str], users: list[str], counter: itertools.count,
                  stop_at: float, measure_from: float, out: list[float], codes: Counter[int]) -> None:  # fmt: skip  # noqa: E501
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        while (now := time.perf_counter()) < stop_at:
            n = next(counter)
            body = {"userId": users[n % len(users)], "projectId": f"{0xA0000000 + n:024x}",
                    "uploadId": f"{0xE0000000 + n:024x}"}  # fmt: skip
            resp = await client.post(url, json=body)
            if now >= measure_from:
                out.append(time.perf_counter() - now)
                codes[resp.status_code] += 1


async def main(args: argparse.Namespace) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {args.token}"}
    start = time.perf_counter()
    measure_from, stop_at = start + args.warmup, start + args.warmup + args.seconds
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    counter = itertools.count()
    users = args.users.split(",")
    await asyncio.gather(*(_client(args.url, headers, users, counter, stop_at, measure_from,
                                   latencies, codes) for _ in range(args.concurrency)))  # fmt: skip
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return (
            ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000 if ordered else 0.0
        )

    return {"requests": len(ordered), "errors": sum(v for k, v in codes.items() if k >= 400),
            "statuses": {str(k): v for k, v in codes.items()},
            "rps": len(ordered) / args.seconds, "p50_ms": pct(50), "p99_ms": pct(99)}  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--token", default="bench-token")
    p.add_argument("--users", required=True)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    print(json.dumps(asyncio.run(main(p.parse_args()))))
