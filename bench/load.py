"""Load generator for scenario 3, run as its own process: N concurrent clients POST bodies.

    python -m bench.load URL --token T --users U1,U2 --concurrency 32 --seconds 5 --warmup 1

Prints one JSON line: requests, errors, statuses, rps, p50/p99 latency in ms.

Each client is one keep-alive HTTP/1.1 connection driven with asyncio streams: a request is
written as bytes, the answer read by its Content-Length. The generator shares the machine
with the server it measures; an httpx.AsyncClient per client took most of a core at
~1,000 requests/s, CPU the server under test then did not get.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import time
from collections import Counter
from urllib.parse import urlsplit


class Conn:
    """One keep-alive connection to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def post(self, head: bytes, body: bytes) -> int:
        """Send one request (`head`: request line and headers, all but the length); the
        answer's status (its body is read and dropped)."""
        self.writer.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
        lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError("chunked answers are not supported by this load generator")
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def _client(
    url: str,
    token: str,
    users: list[str],
    counter: itertools.count,
    stop_at: float,
    measure_from: float,
    out: list[float],
    codes: Counter[int],
) -> None:
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
    ).encode()
    conn = await Conn.open(parts.hostname or "127.0.0.1", parts.port or 80)
    try:
        while (now := time.perf_counter()) < stop_at:
            n = next(counter)
            body = {
                "userId": users[n % len(users)],
                "projectId": f"{0xA0000000 + n:024x}",
                "uploadId": f"{0xE0000000 + n:024x}",
            }
            status = await conn.post(head, json.dumps(body).encode())
            if now >= measure_from:
                out.append(time.perf_counter() - now)
                codes[status] += 1
    finally:
        conn.close()


async def main(args: argparse.Namespace) -> dict[str, object]:
    start = time.perf_counter()
    measure_from, stop_at = start + args.warmup, start + args.warmup + args.seconds
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    counter = itertools.count()
    users = args.users.split(",")
    await asyncio.gather(
        *(
            _client(args.url, args.token, users, counter, stop_at, measure_from, latencies, codes)
            for _ in range(args.concurrency)
        )
    )
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return (
            ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000 if ordered else 0.0
        )

    return {
        "requests": len(ordered),
        "errors": sum(v for k, v in codes.items() if k >= 400),
        "statuses": {str(k): v for k, v in codes.items()},
        "rps": len(ordered) / args.seconds,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--token", default="bench-token")
    p.add_argument("--users", required=True)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    print(json.dumps(asyncio.run(main(p.parse_args()))))
