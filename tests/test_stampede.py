"""Stampede protection (single flight) of ``@cached``, and what a hit costs.

Threads and tasks start their misses together (a barrier / an event) and the function sleeps
long enough for all of them to miss before it returns, so the exactly-once checks would fail
without single flight (the ``single_flight=False`` tests show that). The multi-process test
runs 50 callers in 4 spawned processes on a real Redis and counts computations with INCR.
Round trips are counted by wrapping the redis-py clients' ``execute_command`` and on the
server (``INFO commandstats``).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from cachify_core import Cachify, cached, init_cachify
from cachify_core import instance as instance_module

from . import mp_workers_cache
from .support import CTX, Counter, join_all, start_all

#: Upper bound of every wait in this file, in seconds.
WAIT_S = 10.0
#: Concurrent callers of one key.
CALLERS = 20
#: How long the stampeded function computes.
COMPUTE_S = 0.2


def run_threads(target: Callable[[], Any], n: int) -> list[Any]:
    """Run ``target`` in ``n`` threads released together; their results (errors re-raised)."""
    start = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            start.wait(WAIT_S)
            results[i] = target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + WAIT_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "callers did not finish in time"
    if errors:
        raise errors[0]
    return results


async def run_tasks(target: Callable[[], Any], n: int) -> list[Any]:
    """Run ``target()`` in ``n`` tasks released together by one event."""
    go = asyncio.Event()

    async def body() -> Any:
        await go.wait()
        return await target()

    tasks = [asyncio.create_task(body()) for _ in range(n)]
    await asyncio.sleep(0)  # every task is now waiting on the event
    go.set()
    return list(await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S))


# -- threads and tasks ----------------------------------------------------------------------------
def test_concurrent_misses_compute_once_threads(cachify: Cachify) -> None:
    counter = Counter()

    @cached("stampede-{x}")
    def compute(x: int) -> str:
        value = counter.next()
        time.sleep(COMPUTE_S)
        return value

    results = run_threads(lambda: compute(1), CALLERS)
    assert counter.calls == 1
    assert results == ["run-1"] * CALLERS
    assert compute(1) == "run-1"  # and it is cached


async def test_concurrent_misses_compute_once_tasks(cachify: Cachify) -> None:
    counter = Counter()

    @cached("stampede-{x}")
    async def compute(x: int) -> str:
        value = counter.next()
        await asyncio.sleep(COMPUTE_S)
        return value

    results = await run_tasks(lambda: compute(1), CALLERS)
    assert counter.calls == 1
    assert results == ["run-1"] * CALLERS
    assert await compute(1) == "run-1"


def test_sync_and_async_callers_share_one_flight(cachify: Cachify) -> None:
    """A thread's computation serves async callers of the same key (and the other way round)."""
    counter = Counter()

    @cached("mixed-{x}")
    def compute(x: int) -> str:
        value = counter.next()
        time.sleep(COMPUTE_S)
        return value

    @cached("mixed-{x}")
    async def acompute(x: int) -> str:
        value = counter.next()
        await asyncio.sleep(COMPUTE_S)
        return value

    async def async_callers() -> list[str]:
        return await run_tasks(lambda: acompute(1), CALLERS // 2)

    def one_caller(i: int) -> Any:
        return compute(1) if i % 2 else asyncio.run(async_callers())

    ids = itertools.count()
    id_lock = threading.Lock()

    def target() -> Any:
        with id_lock:
            i = next(ids)
        return one_caller(i)

    results = run_threads(target, 4)
    flat = [r for item in results for r in (item if isinstance(item, list) else [item])]
    assert counter.calls == 1
    assert set(flat) == {"run-1"}
    assert len(flat) == 2 + 2 * (CALLERS // 2)


def test_without_single_flight_misses_compute_more_than_once_threads(cachify: Cachify) -> None:
    """The control: the same stampede with ``single_flight=False`` runs the function repeatedly."""
    counter = Counter()

    @cached("loose-{x}", single_flight=False)
    def compute(x: int) -> str:
        value = counter.next()
        time.sleep(COMPUTE_S)
        return value

    results = run_threads(lambda: compute(1), CALLERS)
    assert counter.calls > 1
    assert len(set(results)) > 1


async def test_without_single_flight_misses_compute_more_than_once_tasks(cachify: Cachify) -> None:
    counter = Counter()

    @cached("loose-{x}", single_flight=False)
    async def compute(x: int) -> str:
        value = counter.next()
        await asyncio.sleep(COMPUTE_S)
        return value

    await run_tasks(lambda: compute(1), CALLERS)
    assert counter.calls > 1


def test_different_keys_do_not_wait_for_each_other(cachify: Cachify) -> None:
    counter = Counter()
    computing, gate = threading.Event(), threading.Event()

    @cached("per-key-{x}")
    def compute(x: int) -> str:
        value = counter.next()
        if x == 1:
            computing.set()
            assert gate.wait(WAIT_S)
        return value

    first = threading.Thread(target=compute, args=(1,), daemon=True)
    first.start()
    try:
        assert computing.wait(WAIT_S)
        began = time.monotonic()
        assert compute(2) == "run-2"
        assert time.monotonic() - began < WAIT_S / 2, "a miss of key 2 waited for key 1"
    finally:
        gate.set()
        first.join(WAIT_S)
    assert not first.is_alive()


def test_waiter_computes_itself_after_wait_timeout_threads(
    cachify: Cachify, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cachify")
    counter = Counter()
    computing = threading.Event()

    @cached("slow-{x}", wait_timeout=0.2)
    def compute(x: int) -> str:
        value = counter.next()
        computing.set()
        time.sleep(1.0)
        return value

    first: list[str] = []
    t = threading.Thread(target=lambda: first.append(compute(1)), daemon=True)
    t.start()
    assert computing.wait(WAIT_S)
    assert compute(1) == "run-2"  # gave up waiting for run-1 and computed itself
    t.join(WAIT_S)
    assert not t.is_alive()
    assert first == ["run-1"]
    assert counter.calls == 2
    assert any("waited" in r.getMessage() and "slow-1-cached" in r.getMessage() for r in caplog.records)


async def test_waiter_computes_itself_after_wait_timeout_tasks(cachify: Cachify) -> None:
    counter = Counter()
    computing = asyncio.Event()

    @cached("slow-{x}", wait_timeout=0.2)
    async def compute(x: int) -> str:
        value = counter.next()
        computing.set()
        await asyncio.sleep(1.0)
        return value

    first = asyncio.create_task(compute(1))
    await asyncio.wait_for(computing.wait(), WAIT_S)
    assert await asyncio.wait_for(compute(1), WAIT_S) == "run-2"
    assert await asyncio.wait_for(first, WAIT_S) == "run-1"
    assert counter.calls == 2


def test_waiter_within_wait_timeout_gets_the_computed_value_threads(cachify: Cachify) -> None:
    """The same timing as above with the default ``wait_timeout``: the waiter is served."""
    counter = Counter()
    computing = threading.Event()

    @cached("slow-{x}")
    def compute(x: int) -> str:
        value = counter.next()
        computing.set()
        time.sleep(1.0)
        return value

    t = threading.Thread(target=compute, args=(1,), daemon=True)
    t.start()
    assert computing.wait(WAIT_S)
    assert compute(1) == "run-1"
    t.join(WAIT_S)
    assert counter.calls == 1


def test_a_failing_computation_lets_the_waiters_compute(cachify: Cachify) -> None:
    """Errors are not cached and do not strand the waiters: one of them computes next."""
    counter = Counter()
    computing = threading.Event()

    @cached("flaky-{x}")
    def compute(x: int) -> str:
        value = counter.next()
        if value == "run-1":
            computing.set()
            time.sleep(COMPUTE_S)
            raise RuntimeError("first computation fails")
        return value

    errors: list[BaseException] = []

    def failing() -> None:
        try:
            compute(1)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=failing, daemon=True)
    t.start()
    assert computing.wait(WAIT_S)
    began = time.monotonic()
    assert compute(1) == "run-2"
    assert time.monotonic() - began < WAIT_S / 2
    t.join(WAIT_S)
    assert len(errors) == 1
    assert counter.calls == 2


# -- processes (Redis) ----------------------------------------------------------------------------
#: Wall-clock bound on any one test's children.
JOIN_TIMEOUT_S = 30.0


def stampede_across_processes(url: str, raw: redis.Redis, single_flight: bool) -> tuple[int, list[str]]:
    """50 callers in 4 processes miss one key together: (computations, values they got)."""
    prefix = f"ST{uuid.uuid4().hex[:8]}-"
    callers = [13, 13, 12, 12]
    barrier = CTX.Barrier(len(callers))
    procs = start_all(
        mp_workers_cache.stampede_worker,
        [(url, prefix, i, n, single_flight, barrier) for i, n in enumerate(callers)],
    )
    join_all(procs, raw, prefix, JOIN_TIMEOUT_S)
    results = [r.decode() for r in raw.lrange(prefix + "results", 0, -1)]
    assert len(results) == sum(callers)
    return int(raw.get(prefix + "computations") or 0), results


def test_fifty_misses_across_four_processes_compute_once(flushed_redis_url: str, raw: redis.Redis) -> None:
    computations, results = stampede_across_processes(flushed_redis_url, raw, single_flight=True)
    assert computations == 1
    assert len(set(results)) == 1, f"callers got different values: {sorted(set(results))}"
    assert results[0].startswith("computed-by-")


def test_fifty_misses_across_four_processes_without_single_flight(
    flushed_redis_url: str, raw: redis.Redis
) -> None:
    """The control: the same race with ``single_flight=False`` computes in several processes."""
    computations, results = stampede_across_processes(flushed_redis_url, raw, single_flight=False)
    assert computations > 1
    assert len(set(results)) > 1


# -- what a hit costs -----------------------------------------------------------------------------
class ServerCommands:
    """The commands a Redis server receives from clients while in use, seen with ``MONITOR``
    (commands a script runs are left out: they are part of its one round trip)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=WAIT_S)
        self.marker = redis.Redis.from_url(url, socket_timeout=WAIT_S)
        self.marker.ping()  # connected now, so no handshake shows up among the commands
        self.monitor = self.client.monitor()

    def __enter__(self) -> ServerCommands:
        self.monitor.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.monitor.__exit__()
        self.client.close()
        self.marker.close()

    def seen(self) -> list[str]:
        """Names of the commands received so far (up to a marker this sends itself)."""
        marker = f"end-of-test-commands-{uuid.uuid4().hex}"
        self.marker.echo(marker)
        names: list[str] = []
        for _ in range(10_000):
            received = self.monitor.next_command()
            if marker in received["command"]:
                return names
            if received["client_type"] != "lua":
                names.append(received["command"].split(" ", 1)[0].upper())
        raise AssertionError("the marker never arrived")


def primitive_calls(monkeypatch: pytest.MonkeyPatch, backend: Any) -> list[str]:
    """Record every backend primitive called on ``backend`` (any method not starting with ``_``)."""
    called: list[str] = []
    for name in ("cache_get", "cache_set", "cache_delete", "lock_acquire", "lock_release", "wait"):
        original = getattr(backend, name)

        def make(name: str, original: Any) -> Any:
            if inspect.iscoroutinefunction(original):

                async def arecord(*args: Any) -> Any:
                    called.append(name)
                    return await original(*args)

                return arecord

            def record(*args: Any) -> Any:
                called.append(name)
                return original(*args)

            return record

        monkeypatch.setattr(backend, name, make(name, original))
    return called


@pytest.fixture
def on_redis(flushed_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Cachify:
    """A fresh Redis instance installed as the global one."""
    c = init_cachify(url=flushed_redis_url, prefix=f"RT{uuid.uuid4().hex[:8]}-", is_global=False)
    monkeypatch.setattr(instance_module, "_global", c)
    return c


@pytest.mark.parametrize("single_flight", [True, False])
def test_a_hit_is_one_round_trip_on_redis_sync(
    on_redis: Cachify, flushed_redis_url: str, single_flight: bool
) -> None:
    calls: list[int] = []

    @cached("hit-{x}", single_flight=single_flight)
    def compute(x: int) -> int:
        calls.append(x)
        return x * 2

    with ServerCommands(flushed_redis_url) as server:
        assert compute(21) == 42  # the miss
        assert len(server.seen()) > 1  # (the monitor does see our commands)
        assert compute(21) == 42  # the hit
        hit = server.seen()
    assert calls == [21]
    assert len(hit) == 1, f"a hit sent {hit}"


@pytest.mark.parametrize("single_flight", [True, False])
async def test_a_hit_is_one_round_trip_on_redis_async(
    on_redis: Cachify, flushed_redis_url: str, single_flight: bool
) -> None:
    calls: list[int] = []

    @cached("hit-{x}", single_flight=single_flight)
    async def compute(x: int) -> int:
        calls.append(x)
        return x * 2

    with ServerCommands(flushed_redis_url) as server:
        assert await compute(21) == 42
        assert len(server.seen()) > 1
        assert await compute(21) == 42
        hit = server.seen()
    assert calls == [21]
    assert len(hit) == 1, f"a hit sent {hit}"


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_hit_is_one_lookup_on_every_backend(
    cachify: Cachify, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    calls: list[int] = []
    if kind == "sync":

        @cached("hit1-{x}")
        def compute(x: int) -> int:
            calls.append(x)
            return x

        compute(1)
        primitives = primitive_calls(monkeypatch, cachify.sync_backend)
        compute(1)
    else:

        @cached("hit1-{x}")
        async def acompute(x: int) -> int:
            calls.append(x)
            return x

        await acompute(1)
        primitives = primitive_calls(monkeypatch, cachify.async_backend)
        await acompute(1)
    assert calls == [1]
    assert primitives == ["cache_get"]
