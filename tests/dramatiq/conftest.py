"""Fixtures of the Dramatiq integration's tests.

* ``stub_broker`` / ``stub_worker``: a ``StubBroker`` with ``CachifyMiddleware`` (on the
  parametrized ``cachify`` instance: memory and Redis), ``AsyncIO``, ``CurrentMessage`` and
  ``Results``, and an in-process ``dramatiq.Worker`` of 4 threads.
* ``app`` / ``start_workers``: real ``dramatiq`` worker processes over a ``RedisBroker`` on the
  session's private Redis (broker db 1, cachify db 0, observations db 2, all flushed around
  each test), running ``tests/dramatiq/worker_app.py``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType

import dramatiq
import pytest
from dramatiq import broker as broker_module
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, CurrentMessage
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

from cachify_core import Cachify
from cachify_dramatiq import CachifyMiddleware

from ..servers import unavailable

ROOT = Path(__file__).resolve().parents[2]
#: How long a worker group may take to answer its first ping.
WORKER_STARTUP_S = 20.0
#: How long a worker group may take to shut down on SIGTERM before it is killed.
WORKER_SHUTDOWN_S = 15.0
#: Workers poll idle queues (and their delay queues) this often, in ms (dramatiq's default is
#: 1000): requeued messages come back sooner and shutdown is quicker.
WORKER_TIMEOUT_MS = 100
#: How long a stub broker's queue may take to drain, in ms (unless a test gives its own bound).
JOIN_TIMEOUT_MS = 20_000


def drain(
    broker: StubBroker, worker: dramatiq.Worker, fail_fast: bool = True, timeout_ms: int = JOIN_TIMEOUT_MS
) -> None:
    """Wait until ``broker``'s default queue is empty, then until ``worker`` is idle."""
    broker.join("default", timeout=timeout_ms, fail_fast=fail_fast)
    worker.join()


@pytest.fixture
def results_backend() -> StubBackend:
    return StubBackend()


@pytest.fixture
def stub_broker(cachify: Cachify, results_backend: StubBackend) -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    broker.add_middleware(CachifyMiddleware(cachify=cachify))
    broker.add_middleware(AsyncIO())
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(Results(backend=results_backend))  # type: ignore[no-untyped-call]
    previous = broker_module.global_broker  # not get_broker(): that would build a default one
    dramatiq.set_broker(broker)
    try:
        yield broker
    finally:
        broker.flush_all()
        broker.close()
        broker_module.global_broker = previous


@pytest.fixture
def make_worker(stub_broker: StubBroker) -> Iterator[Callable[..., dramatiq.Worker]]:
    """``make_worker(threads=4)``: an in-process worker, started when the test is ready for it."""
    workers: list[dramatiq.Worker] = []

    def start(threads: int = 4) -> dramatiq.Worker:
        worker = dramatiq.Worker(stub_broker, worker_threads=threads, worker_timeout=WORKER_TIMEOUT_MS)
        worker.start()
        workers.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in workers:
            worker.stop()


@pytest.fixture
def stub_worker(make_worker: Callable[..., dramatiq.Worker]) -> dramatiq.Worker:
    return make_worker()


# -- real worker processes --------------------------------------------------------------------
@pytest.fixture
def worker_redis(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The session's Redis, with the app's databases flushed before and after the test."""
    import redis

    monkeypatch.setenv("CACHIFY_DRAMATIQ_TEST_REDIS_URL", redis_url)  # read when the app is imported
    from .worker_app import BROKER_DB, CACHIFY_DB, OBSERVATIONS_DB, with_db

    clients = [
        redis.Redis.from_url(with_db(redis_url, db)) for db in (CACHIFY_DB, BROKER_DB, OBSERVATIONS_DB)
    ]
    try:
        clients[0].ping()
    except redis.exceptions.RedisError as exc:
        unavailable(f"Redis at {redis_url} does not answer: {exc}")
    for client in clients:
        client.flushdb()
    try:
        yield redis_url
    finally:
        for client in clients:
            client.flushdb()
            client.close()


@pytest.fixture
def app(worker_redis: str) -> ModuleType:
    """``worker_app`` imported in the test process (to send messages), on the test's Redis."""
    from . import worker_app

    if worker_redis != worker_app.BASE_URL:  # imported earlier for another server
        worker_app = importlib.reload(worker_app)
    return worker_app


WorkerGroup = subprocess.Popen[bytes]


@pytest.fixture
def start_workers(app: ModuleType, worker_redis: str) -> Iterator[Callable[..., WorkerGroup]]:
    """``start_workers(processes=2, threads=2, queues=(), module=app, env={})``: a ``dramatiq``
    command running ``module`` (an app with ``broker``, ``ping`` and ``observations()`` like
    worker_app's; on ``queues`` only, when given; ``env`` added to its environment), ready (it
    answered a ping) when returned; every group is stopped after the test."""
    groups: list[WorkerGroup] = []
    base_env = dict(
        os.environ,
        **{app.REDIS_URL_ENV: worker_redis, "dramatiq_worker_timeout": str(WORKER_TIMEOUT_MS)},
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    dramatiq_bin = Path(sys.executable).with_name("dramatiq")

    def start(
        processes: int = 2,
        threads: int = 2,
        queues: tuple[str, ...] = (),
        module: ModuleType = app,
        env: Mapping[str, str] | None = None,
    ) -> WorkerGroup:
        group = subprocess.Popen(
            [str(dramatiq_bin), f"{module.__name__}:broker",
             "--processes", str(processes), "--threads", str(threads), "--skip-logging",
             *(["--queues", *queues] if queues else [])],
            cwd=ROOT,
            env={**base_env, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so the finally below can end it all
        )  # fmt: skip
        groups.append(group)
        token = uuid.uuid4().hex
        ping = module.ping.message(token)
        module.broker.enqueue(ping.copy(queue_name=queues[0]) if queues else ping)
        deadline = time.monotonic() + WORKER_STARTUP_S
        obs = module.observations()
        while not any(v.decode().startswith(token) for v in obs.lrange("ping", 0, -1)):
            if group.poll() is not None:
                raise RuntimeError(f"dramatiq workers exited with code {group.returncode} on start")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dramatiq workers did not answer a ping in {WORKER_STARTUP_S}s")
            time.sleep(0.02)
        return group

    try:
        yield start
    finally:
        for group in groups:
            stop_group(group)


def stop_group(group: WorkerGroup) -> None:
    """SIGTERM to the main process only (it forwards it; a second signal makes workers hang
    in a hard kill), SIGKILL to the whole group if it does not stop in time."""
    if group.poll() is None:
        group.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            group.wait(WORKER_SHUTDOWN_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group.pid, signal.SIGKILL)  # workers orphaned by a killed main process
    group.wait(WORKER_SHUTDOWN_S)
