"""Fault injectors for system tests: Redis of our own (alone or under Sentinels), a TCP proxy."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
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


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `cut()` refuses new and drops live connections."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        """Listen again."""
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(128)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and reset every live one."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                c.close()

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()


class TlsFront:
    """A TLS front for a local plain-HTTP server, as a CDN or load balancer would be: each
    connection's set-up (before the TLS handshake completes) takes a random time in
    `setup_s`, and a connection idle for `idle_close_s` (no request waiting for its answer,
    no answer's bytes meanwhile) is closed. Its certificate comes
    from a throw-away CA whose file `ca_path` a client trusts through SSL_CERT_FILE."""

    def __init__(
        self,
        target_port: int,
        folder: Path,
        *,
        setup_s: tuple[float, float] = (0, 0.05),
        idle_close_s: float = 1.0,
        seed: int = 7,
    ) -> None:
        import random
        import ssl

        import trustme

        ca = trustme.CA()
        self.ca_path = folder / f"front-ca-{target_port}.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(self._ctx)
        self.target = ("127.0.0.1", target_port)
        self.setup_s, self.idle_close_s = setup_s, idle_close_s
        self._random = random.Random(seed)
        self.connections = 0
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/pixelStripeApi") -> str:
        """The front's base URL."""
        return f"https://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            delay = self._random.uniform(*self.setup_s)
            threading.Thread(target=self._serve, args=(client, delay), daemon=True).start()

    def _serve(self, client: socket.socket, delay: float) -> None:
        import ssl

        time.sleep(delay)  # the handshake's answer waits: the client's set-up takes this long
        try:
            client.settimeout(10)
            tls = self._ctx.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(self.target, timeout=5)
        except (OSError, ssl.SSLError):
            client.close()
            return
        idle = _Idle()
        tls.settimeout(_IDLE_TICK_S)
        threading.Thread(target=self._answer, args=(upstream, tls, idle), daemon=True).start()
        try:
            while True:
                try:
                    data = tls.recv(65536)
                except TimeoutError:
                    if idle.seconds() >= self.idle_close_s:
                        break  # idle too long: close, as a load balancer does
                    continue
                if not data:
                    break
                idle.asked()
                upstream.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for s in (tls, upstream):
                with contextlib.suppress(OSError):
                    s.close()

    @staticmethod
    def _answer(upstream: socket.socket, tls: socket.socket, idle: _Idle) -> None:
        try:
            while data := upstream.recv(65536):
                idle.answered()
                tls.sendall(data)
        except OSError:
            pass
        finally:
            for s in (upstream, tls):
                with contextlib.suppress(OSError):
                    s.close()


_IDLE_TICK_S = 0.05


class _Idle:
    """How long a front's connection has been idle: since its last answer's bytes (or its
    set-up), and never while a request waits for its answer (a slow origin is not idle)."""

    def __init__(self) -> None:
        self._since: float | None = time.monotonic()

    def asked(self) -> None:
        self._since = None

    def answered(self) -> None:
        self._since = time.monotonic()

    def seconds(self) -> float:
        since = self._since
        return 0.0 if since is None else time.monotonic() - since


def seams_from_env() -> dict[str, Any]:
    """`build_context` seams for a process a fault test starts, from its environment
    (named by SPDIST_CONTEXT_SEAMS=worker.dev.faults:seams_from_env):

    SPDIST_TEST_LEASE_S     a shorter claim lease, so a lease-expiry scenario fits in seconds
    SPDIST_TEST_CLAIM_GATE  dir: the first claim for the upload named in dir/upload stops
                            between the reservation and the claim's SQL: it creates
                            dir/at-claim and waits for dir/go (a test cuts the database there)
    SPDIST_TEST_SEND_GATE   dir: the first call for the upload named in dir/upload, once it
                            has taken its slot, writes its pid to dir/at-send and waits for
                            dir/go before it sends (a test SIGSTOPs the process there)
    """
    from worker.context import Hooks

    seams: dict[str, Any] = {}
    if lease := os.environ.get("SPDIST_TEST_LEASE_S"):
        seams["lease_s"] = float(lease)
    claim_gate = os.environ.get("SPDIST_TEST_CLAIM_GATE")
    send_gate = os.environ.get("SPDIST_TEST_SEND_GATE")
    seams["hooks"] = Hooks(
        before_claim=_gate(Path(claim_gate), "at-claim") if claim_gate else Hooks.before_claim,
        after_fire=_gate(Path(send_gate), "at-send") if send_gate else Hooks.after_fire,
    )
    return seams


def _gate(folder: Path, marker: str) -> Any:
    """A hook that stops the first time it sees the upload named in folder/upload: it
    creates folder/`marker` (holding this pid) and waits up to 30 s for folder/go."""

    def stop(name: str) -> None:
        target = folder / "upload"
        if not (target.exists() and name.endswith(target.read_text().strip())):
            return
        try:
            fd = os.open(folder / marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # another attempt already stopped here once
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        deadline = time.monotonic() + 30
        while not (folder / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.001)

    return stop
