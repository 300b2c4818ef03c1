"""Fixtures of the Taskiq integration tests.

- ``make_broker``: an ``InMemoryBroker`` with ``CachifyMiddleware`` on the test's ``cachify``
  instance (memory or Redis, from the suite's backend table), started and shut down.
- ``redis_base_url``: the session's real Redis without a database number; the real-worker
  tests put the stream broker on db 1, results on db 2 and cachify on db 0.
- ``workers``: ``taskiq worker tests.taskiq.worker_app:broker --workers 2`` subprocesses for a
  test module, killed (their whole process group) when it ends.
- ``app``: :mod:`tests.taskiq.worker_app` on the sending side, its broker started for one test,
  with cachify's db 0 and the results' db 2 flushed before and after.
- ``room_workers`` / ``room_app``: the same for :mod:`tests.taskiq.room_app` (the waiting-room
  tests; its own stream and prefix).
- ``reclaim_workers`` / ``reclaim_app``: the same for :mod:`tests.taskiq.reclaim_app` (a dead
  worker's delivery reclaimed; a short ``idle_timeout``).

A missing Redis skips these tests locally and fails them with ``CI=true`` (the suite's
``redis_url`` fixture decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from taskiq import InMemoryBroker

from cachify_core import Cachify
from cachify_taskiq import CachifyMiddleware

from ..servers import unavailable

ROOT = Path(__file__).resolve().parents[2]
APP_MODULE = "tests.taskiq.worker_app"
ROOM_APP_MODULE = "tests.taskiq.room_app"
RECLAIM_APP_MODULE = "tests.taskiq.reclaim_app"
#: Seconds the workers get to stop on SIGTERM before their process group is killed. Taskiq
#: 0.13's children over RedisStreamBroker often hang in shutdown, so this is kept short.
STOP_GRACE_S = 3.0
#: Seconds a fresh ``taskiq worker`` may take until both processes listen.
WORKER_START_S = 30.0


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, interval_s: float = 0.02
) -> None:
    """Await ``check()`` until true, at most ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(interval_s)


# -- in-memory broker ---------------------------------------------------------------------------
@pytest.fixture
async def make_broker(cachify: Cachify) -> AsyncIterator[Callable[..., InMemoryBroker]]:
    """``make_broker(**inmemory_options)``: a broker with CachifyMiddleware on ``cachify``;
    started by the test (``await broker.startup()``), shut down here."""
    brokers: list[InMemoryBroker] = []

    def factory(*, middlewares: tuple[Any, ...] = (), **options: Any) -> InMemoryBroker:
        options.setdefault("max_stored_results", -1)
        broker = InMemoryBroker(**options).with_middlewares(CachifyMiddleware(cachify=cachify), *middlewares)
        brokers.append(broker)
        return broker

    yield factory
    for broker in brokers:
        await broker.wait_all()
        await broker.shutdown()


# -- real workers -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_base_url(redis_url: str) -> str:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        unavailable(f"Redis at {redis_url} does not answer: {exc}")
    finally:
        client.close()
    scheme, _, rest = redis_url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}"


def flush(base_url: str, *dbs: int) -> None:
    import redis

    for db in dbs:
        client = redis.Redis.from_url(f"{base_url}/{db}")
        try:
            client.flushdb()
        finally:
            client.close()


@dataclass
class Workers:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_workers(
    redis_base_url: str, app_module: str, count: int = 2, extra_env: Mapping[str, str] | None = None
) -> Iterator[Workers]:
    """``taskiq worker <app_module>:broker --workers <count>`` (``extra_env`` added to its
    environment), until all listen; stopped after."""
    flush(redis_base_url, 0, 1, 2)
    log_path = Path(tempfile.mkstemp(prefix="cachify-taskiq-workers-", suffix=".log")[1])
    env = {**os.environ, "CACHIFY_TASKIQ_REDIS": redis_base_url, "PYTHONPATH": str(ROOT), **(extra_env or {})}
    taskiq = Path(sys.executable).with_name("taskiq")
    command = [str(taskiq), "worker", f"{app_module}:broker", "--workers", str(count)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    handle = Workers(proc, log_path)
    try:
        deadline = time.monotonic() + WORKER_START_S
        while handle.log().count("Listening started") < count:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"taskiq workers did not start:\n{handle.log()[-4000:]}")
            time.sleep(0.05)
        yield handle
    finally:
        stop_process_group(proc)
        flush(redis_base_url, 0, 1, 2)
        log_path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def workers(redis_base_url: str) -> Iterator[Workers]:
    with running_workers(redis_base_url, APP_MODULE) as handle:
        yield handle


@pytest.fixture(scope="module")
def room_workers(redis_base_url: str) -> Iterator[Workers]:
    with running_workers(redis_base_url, ROOM_APP_MODULE) as handle:
        yield handle


@pytest.fixture(scope="module")
def reclaim_workers(redis_base_url: str) -> Iterator[Workers]:
    with running_workers(redis_base_url, RECLAIM_APP_MODULE) as handle:
        yield handle


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the workers' process group (the session we started them in), then SIGKILL it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


async def sending_side(redis_base_url: str, app_module: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("CACHIFY_TASKIQ_REDIS", redis_base_url)
    module = importlib.import_module(app_module)
    flush(redis_base_url, 0, 2)
    await module.broker.startup()
    return module


@pytest.fixture
async def app(
    redis_base_url: str, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ModuleType]:
    module = await sending_side(redis_base_url, APP_MODULE, monkeypatch)
    try:
        yield module
    finally:
        await module.broker.shutdown()
        flush(redis_base_url, 0, 2)


@pytest.fixture
async def room_app(
    redis_base_url: str, room_workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ModuleType]:
    module = await sending_side(redis_base_url, ROOM_APP_MODULE, monkeypatch)
    try:
        yield module
    finally:
        await module.broker.shutdown()
        flush(redis_base_url, 0, 2)


@pytest.fixture
async def reclaim_app(
    redis_base_url: str, reclaim_workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ModuleType]:
    module = await sending_side(redis_base_url, RECLAIM_APP_MODULE, monkeypatch)
    try:
        yield module
    finally:
        await module.broker.shutdown()
        flush(redis_base_url, 0, 2)
