"""Servers a test starts of its own: a Redis (alone, or a master with a replica under
Sentinels) on free loopback ports."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throw-away redis-server without persistence: killed, restarted empty, flushed."""

    def __init__(self, log_dir: Path, port: int | None = None, args: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.args = list(args)  # more options, e.g. --replicaof
        self.popen: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (again) on the same port, empty."""
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_path),
            *self.args,
        ]
        self.popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.ping():
            if time.monotonic() > deadline:
                raise AssertionError("own redis-server did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: everything in it is gone."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)

    def ping(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_connect_timeout=0.2) as r:
                return bool(r.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def flushall(self) -> None:
        with self.client() as r:
            r.flushall()

    def snapshot(self) -> list[tuple[bytes, bytes, int]]:
        """Every key as (name, DUMP, absolute expiry in ms or 0): what a replica holds."""
        with self.client() as r:
            out = []
            for name in r.scan_iter(count=1000):
                dump, expires = r.dump(name), r.pexpiretime(name)
                if dump is not None and expires != -2:
                    out.append((name, dump, max(0, expires)))
            return out

    def restore(self, snapshot: list[tuple[bytes, bytes, int]]) -> None:
        """Become that older copy of itself: every key as it was, expiries kept absolute
        (a key whose expiry has passed since is gone), everything written since lost."""
        with self.client() as r:
            r.flushall()
            for name, dump, expires in snapshot:
                r.restore(name, expires, dump, replace=True, absttl=bool(expires))


class SentinelCluster:
    """A master, a replica and three Sentinels (quorum 2) on loopback: a failover on demand.

    Each Sentinel writes its own config file (it rewrites it as it learns), in `log_dir`.
    `down-after-milliseconds` 1000 and a short failover timeout make a failover take a few
    seconds once the master is gone."""

    master_name = "spdist"

    def __init__(self, log_dir: Path, down_after_ms: int = 1000, db: int = 0) -> None:
        self.log_dir, self.down_after_ms = log_dir, down_after_ms
        self.master = self._server()
        self.replica = self._server("--replicaof", "127.0.0.1", str(self.master.port))
        self.servers = {s.port: s for s in (self.master, self.replica)}
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels = [self._start_sentinel(port) for port in self.sentinel_ports]
        self.killed: int | None = None
        # kombu's form: the database written once, on the last address.
        self.url = ";".join(f"sentinel://127.0.0.1:{p}" for p in self.sentinel_ports) + f"/{db}"
        self.db = db
        self._wait(self._ready, 30, "the replica in sync and every Sentinel aware of the rest")

    def _server(self, *args: str) -> RedisServer:
        # A replica writes the copy it receives to disk: in log_dir, not the working folder.
        port = free_port()
        files = ["--dir", str(self.log_dir), "--dbfilename", f"dump-{port}.rdb"]
        return RedisServer(self.log_dir, port, args=[*files, *args])

    def _start_sentinel(self, port: int) -> subprocess.Popen[bytes]:
        name, watch = self.master_name, f"{self.master_name} "
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {self.log_dir}",
            f"logfile {self.log_dir / f'sentinel-{port}.log'}",
            f"sentinel monitor {name} 127.0.0.1 {self.master.port} 2",
            f"sentinel down-after-milliseconds {watch}{self.down_after_ms}",
            f"sentinel failover-timeout {watch}{max(2000, 2 * self.down_after_ms)}",
            f"sentinel parallel-syncs {watch}1",
        ]
        conf = self.log_dir / f"sentinel-{port}.conf"
        conf.write_text("\n".join(lines) + "\n")
        argv = ["redis-server", str(conf), "--sentinel"]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(
            port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True
        )

    def _ask(self, port: int, *command: str) -> Any:
        with self.sentinel(port) as r:
            return r.execute_command(*command)

    def _ready(self) -> bool:
        try:
            with self.replica.client() as r:
                if r.info("replication").get("master_link_status") != "up":
                    return False
            return all(self._knows_all(port) for port in self.sentinel_ports)
        except redis.RedisError:  # a Sentinel not listening yet
            return False

    def _knows_all(self, port: int) -> bool:
        replicas = self._ask(port, "SENTINEL", "REPLICAS", self.master_name)
        peers = self._ask(port, "SENTINEL", "SENTINELS", self.master_name)
        return len(replicas) >= 1 and len(peers) >= 2

    def master_port(self, sentinel_port: int | None = None) -> int:
        """The master's port, as a Sentinel names it."""
        port = sentinel_port or self.sentinel_ports[0]
        _, master_port = self._ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return int(master_port)

    def kill_master(self) -> int:
        """SIGKILL to the current master (no persistence: what it held is gone); its port."""
        port = self.master_port()
        self.servers[port].kill()
        self.killed = port
        return port

    def wait_failover(self, timeout: float = 60.0) -> int:
        """Once every Sentinel names a new master and it answers as one: its port."""

        def promoted() -> bool:
            try:
                ports = {self.master_port(p) for p in self.sentinel_ports}
            except redis.RedisError:
                return False
            if len(ports) != 1 or self.killed in ports:
                return False
            with self.servers[ports.pop()].client() as r:
                return r.info("replication").get("role") == "master"

        self._wait(promoted, timeout, "a Sentinel failover")
        return self.master_port()

    def client(self) -> redis.Redis:
        """A plain client of the current master, on the URL's database."""
        return redis.Redis(port=self.master_port(), db=self.db)

    @staticmethod
    def _wait(cond: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def close(self) -> None:
        for p in self.sentinels:
            p.kill()
            p.wait(5)
        for server in self.servers.values():
            server.kill()
