"""Shared by the Celery tests and the worker app they start: Redis databases, waiting, and
real ``celery worker`` processes.

The broker (db 1), the result backend (db 2), cachify (db 0) and the tests' own observations
(db 3: what tasks saw, written from inside workers, read by the test from outside) live on one
Redis server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
CACHIFY_DB, BROKER_DB, BACKEND_DB, OBSERVE_DB = 0, 1, 2, 3
#: The worker app reads its Redis from this variable (``tests/celery/worker_app.py``).
REDIS_ENV = "CACHIFY_CELERY_TEST_REDIS"


def db_url(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", ""))


@dataclass(frozen=True)
class RedisDbs:
    base: str

    @property
    def cachify(self) -> str:
        return db_url(self.base, CACHIFY_DB)

    @property
    def broker(self) -> str:
        return db_url(self.base, BROKER_DB)

    @property
    def backend(self) -> str:
        return db_url(self.base, BACKEND_DB)

    @property
    def observe(self) -> str:
        return db_url(self.base, OBSERVE_DB)

    def flush(self, *urls: str) -> None:
        import redis

        for url in urls:
            with contextlib.closing(redis.Redis.from_url(url)) as client:
                client.flushdb()


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passes (bounded in time, not count)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)


@dataclass
class WorkerProcess:
    """A real ``celery worker`` process (and its pool children), in its own process group."""

    name: str
    pool: str
    concurrency: int
    queues: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    #: The ``-A`` module the worker runs, and variables added to its environment.
    app: str = "tests.celery.worker_app"
    env: dict[str, str] = field(default_factory=dict)

    def start(self, redis_base: str) -> WorkerProcess:
        env = {**os.environ, REDIS_ENV: redis_base, "PYTHONPATH": str(ROOT), **self.env}
        command = [
            sys.executable, "-m", "celery", "-A", self.app, "worker",
            f"--pool={self.pool}", f"--concurrency={self.concurrency}", f"--hostname={self.name}@%h",
            f"--queues={self.queues}", "--loglevel=INFO", "--without-gossip", "--without-mingle",
            "--without-heartbeat", f"--logfile={self.log}",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its children at once, as a dying host would."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _policy(task: Any) -> Any:
    return task._cachify_policies.declared


def pool_size(task: Any, *args: Any, **kwargs: Any) -> int:
    """Live slots of ``task``'s pool for these arguments, read from the backend (1 round trip)."""
    policy = _policy(task)
    c = policy.cachify
    return int(c.sync_backend.pool_size(c.prefix + policy.options.pool_key.format(args, kwargs)))


def hold_holder(task: Any, *args: Any, **kwargs: Any) -> str | None:
    """The task id holding ``task``'s ``once_key`` for these arguments, if any."""
    policy = _policy(task)
    holder: str | None = policy.cachify.sync_backend.lock_holder(policy.once_key(args, kwargs))
    return holder
