"""``pool_*`` on a StubBroker with an in-process worker: the cap, parks in the waiting room and
requeues that leave the retry budget and the result alone, every ``pool_on_full``, a full
stacked pool, lease renewal."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage
from dramatiq.results import ResultFailure, ResultMissing
from dramatiq.results.backends import StubBackend

from cachify_core import Cachify
from cachify_dramatiq import REQUEUES_OPTION

from .conftest import drain

RESULT_TIMEOUT_MS = 10_000
JOIN_TIMEOUT_MS = 30_000
GATE_TIMEOUT_S = 10.0
#: Fast requeues for tests (the default is (1, 60) seconds).
BACKOFF = (0.005, 0.05)


class Gauge:
    """Runs in flight, their peak, and what each run's message carried."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = self.peak = 0
        self.runs: dict[int, int] = {}
        self.retries: set[int] = set()
        self.requeues = 0

    def enter(self) -> None:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def leave(self, i: int) -> None:
        options: dict[str, Any] = getattr(CurrentMessage.get_current_message(), "options", {})
        with self._lock:
            self.active -= 1
            self.runs[i] = self.runs.get(i, 0) + 1
            self.retries.add(options.get("retries", 0))
            self.requeues += options.get(REQUEUES_OPTION, 0)


def test_requeues_cap_concurrency_without_burning_retries(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend
) -> None:
    gauge = Gauge()

    @dramatiq.actor(pool_key="erp", pool_max_size=2, pool_backoff=BACKOFF, max_retries=0, store_results=True)
    def sync(i: int) -> int:
        gauge.enter()
        time.sleep(0.02)
        gauge.leave(i)
        return i

    handles = [sync.send(i) for i in range(30)]
    drain(stub_broker, stub_worker, timeout_ms=JOIN_TIMEOUT_MS)
    assert gauge.runs == dict.fromkeys(range(30), 1)
    assert gauge.peak == 2
    assert gauge.retries == {0}
    assert gauge.requeues > 0
    assert [
        h.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) for h in handles
    ] == list(range(30))


@pytest.mark.parametrize("room", [True, False], ids=["parked", "requeued"])
def test_a_waiting_message_has_no_premature_result(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend, room: bool
) -> None:
    gate, started = threading.Event(), threading.Event()
    requeues: list[int] = []

    @dramatiq.actor(
        pool_key="one",
        pool_max_size=1,
        pool_backoff=BACKOFF,
        pool_max_waiting=100 if room else 0,  # 0: never parks, backs off through the broker
        store_results=True,
    )
    def job(i: int) -> int:
        if i == 0:
            started.set()
            gate.wait(GATE_TIMEOUT_S)
        else:
            requeues.append(CurrentMessage.get_current_message().options[REQUEUES_OPTION])  # type: ignore[union-attr]
        return i * 10

    job.send(0)
    assert started.wait(GATE_TIMEOUT_S)
    waiting = job.send(1)
    time.sleep(0.3)  # parked once, or requeued over and over, meanwhile
    with pytest.raises(ResultMissing):
        waiting.get_result(backend=results_backend)
    gate.set()
    assert waiting.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == 10
    if room:
        assert requeues == [1]  # parked once, handed over when the slot freed
    else:
        assert requeues[0] >= 2


def test_pool_max_requeues_fails_the_task(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend
) -> None:
    gate, started = threading.Event(), threading.Event()

    @dramatiq.actor(
        pool_key="one",
        pool_max_size=1,
        pool_backoff=BACKOFF,
        pool_max_requeues=2,
        pool_max_waiting=0,  # counts requeues through the broker; a parked message waits its turn
        max_retries=0,
        store_results=True,
    )
    def job(i: int) -> int:
        if i == 0:
            started.set()
            gate.wait(GATE_TIMEOUT_S)
        return i

    job.send(0)
    assert started.wait(GATE_TIMEOUT_S)
    gave_up = job.send(1)
    with pytest.raises(ResultFailure, match="CachifyPoolFullError"):
        gave_up.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS)
    gate.set()
    drain(stub_broker, stub_worker, fail_fast=False, timeout_ms=JOIN_TIMEOUT_MS)


@pytest.mark.parametrize("on_full", ["drop", "callable", "raise"])
def test_pool_on_full(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend, on_full: str
) -> None:
    gate, started, ran = threading.Event(), threading.Event(), []

    def busy(i: int) -> str:
        return f"busy-{i}"

    @dramatiq.actor(
        once_key="k-{i}",
        pool_key="one",
        pool_max_size=1,
        pool_on_full=busy if on_full == "callable" else on_full,
        max_retries=0,
        store_results=True,
    )
    def job(i: int) -> str:
        ran.append(CurrentMessage.get_current_message().message_id)  # type: ignore[union-attr]
        if i == 0:
            started.set()
            gate.wait(GATE_TIMEOUT_S)
        return f"ran-{i}"

    job.send(0)
    assert started.wait(GATE_TIMEOUT_S)
    full = job.send(1)
    if on_full == "raise":
        with pytest.raises(ResultFailure, match="CachifyPoolFullError"):
            full.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS)
    else:
        expected = None if on_full == "drop" else "busy-1"
        assert full.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == expected
    # The task is over either way, so its dedup hold went with it.
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while (again := job.send(1)).message_id == full.message_id and time.monotonic() < deadline:
        time.sleep(0.01)  # the nack that ends a raising task lands just after its result
    assert again.message_id != full.message_id
    gate.set()
    drain(stub_broker, stub_worker, fail_fast=False, timeout_ms=JOIN_TIMEOUT_MS)
    assert full.message_id not in ran


def test_a_full_stacked_pool_in_the_body_requeues(
    cachify: Cachify, stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend
) -> None:
    inner = cachify.pool("inner", max_size=1)
    attempts: list[int] = []

    @dramatiq.actor(
        pool_key="outer", pool_max_size=10, pool_backoff=BACKOFF, max_retries=0, store_results=True
    )
    def job() -> str:
        attempts.append(1)
        with cachify.pool("inner", max_size=1):  # raises CachifyPoolFullError while the test holds it
            return "done"

    with inner:
        message = job.send()
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while len(attempts) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert message.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == "done"
    assert len(attempts) >= 3


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_slots_are_renewed_while_the_task_runs(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, asynchronous: bool
) -> None:
    gauge = Gauge()
    options: dict[str, Any] = {"pool_key": "renewed", "pool_max_size": 1, "pool_slot_ttl": 0.3}
    options["pool_backoff"] = BACKOFF

    if asynchronous:
        import asyncio

        @dramatiq.actor(actor_name="slow", **options)
        async def slow_async(i: int) -> None:
            gauge.enter()
            await asyncio.sleep(0.6)  # twice the slot's TTL
            gauge.leave(i)
    else:

        @dramatiq.actor(actor_name="slow", **options)
        def slow_sync(i: int) -> None:
            gauge.enter()
            time.sleep(0.6)
            gauge.leave(i)

    for i in range(3):
        stub_broker.actors["slow"].send(i)
    drain(stub_broker, stub_worker, timeout_ms=JOIN_TIMEOUT_MS)
    assert gauge.runs == {0: 1, 1: 1, 2: 1}
    assert gauge.peak == 1
