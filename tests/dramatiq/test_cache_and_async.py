"""``cache_*`` (a hit is the actor's result as Results sees it) and async actors (``AsyncIO``)
on a StubBroker with an in-process worker."""

from __future__ import annotations

import asyncio
import threading

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.results.backends import StubBackend

from .conftest import drain

RESULT_TIMEOUT_MS = 10_000
GATE_TIMEOUT_S = 10.0


def test_a_cache_hit_is_the_result_without_running(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend
) -> None:
    runs: list[int] = []

    @dramatiq.actor(cache_key="square-{x}", store_results=True)
    def square(x: int) -> int:
        runs.append(x)
        return x * x

    assert square.send(7).get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == 49
    hits = [square.send(7) for _ in range(5)]
    assert [h.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) for h in hits] == [
        49
    ] * 5
    assert square.send(8).get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == 64
    assert runs == [7, 8]


def test_a_failed_run_is_not_cached(stub_broker: StubBroker, stub_worker: dramatiq.Worker) -> None:
    runs: list[int] = []

    @dramatiq.actor(cache_key="once-{x}", max_retries=0)
    def flaky(x: int) -> int:
        runs.append(x)
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        return x

    for _ in range(3):
        flaky.send(1)
        drain(stub_broker, stub_worker, fail_fast=False)
    assert runs == [1, 1]  # failed, ran and cached, hit


def test_a_cache_hit_releases_the_dedup_hold(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend
) -> None:
    @dramatiq.actor(once_key="k-{x}", cache_key="c-{x}", store_results=True)
    def job(x: int) -> int:
        return x + 1

    first = job.send(1)
    assert first.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == 2
    hit = job.send(1)
    assert hit.message_id != first.message_id
    assert hit.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == 2
    drain(stub_broker, stub_worker)
    assert job.send(1).message_id != hit.message_id


def test_async_actor_dedup_cache_and_pool(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend
) -> None:
    gate, runs = threading.Event(), []

    @dramatiq.actor(once_key="a-{x}", cache_key="ac-{x}", pool_key="ap", pool_max_size=1, store_results=True)
    async def fetch(x: int) -> str:
        runs.append(x)
        await asyncio.to_thread(gate.wait, GATE_TIMEOUT_S)  # the loop stays free for the policy's calls
        return f"fetched-{x}"

    first = fetch.send(1)
    duplicate = fetch.send(1)
    assert duplicate.message_id == first.message_id
    gate.set()
    assert duplicate.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == "fetched-1"
    hit = fetch.send(1)
    assert hit.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == "fetched-1"
    drain(stub_broker, stub_worker)
    assert runs == [1]


def test_async_actor_with_an_async_on_full(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend
) -> None:
    gate, started = threading.Event(), threading.Event()

    async def busy(x: int) -> str:
        await asyncio.sleep(0)
        return f"busy-{x}"

    @dramatiq.actor(pool_key="ap", pool_max_size=1, pool_on_full=busy, store_results=True)
    async def fetch(x: int) -> str:
        started.set()
        if x == 0:
            await asyncio.to_thread(gate.wait, GATE_TIMEOUT_S)
        return f"fetched-{x}"

    first = fetch.send(0)
    assert started.wait(GATE_TIMEOUT_S)
    assert (
        fetch.send(1).get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == "busy-1"
    )
    gate.set()
    assert first.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == "fetched-0"
