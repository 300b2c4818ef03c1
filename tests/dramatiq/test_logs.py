"""The log lines of ``cachify.tasks`` (the core's vocabulary) as Dramatiq runs produce them: each
names the actor, the message id and the key; Dramatiq's own ``was skipped`` warning is left out
for cachify's skips only."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.results.backends import StubBackend

from cachify_core import Cachify

from .conftest import drain

RESULT_TIMEOUT_MS = 10_000
GATE_TIMEOUT_S = 10.0


@pytest.fixture
def task_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="dramatiq")
    caplog.set_level(logging.DEBUG, logger="cachify.tasks")  # last: it sets the handler's level too
    return caplog


def lines(log: pytest.LogCaptureFixture, logger: str = "cachify.tasks") -> list[str]:
    return [r.getMessage() for r in log.records if r.name == logger]


def dramatiq_skips(log: pytest.LogCaptureFixture) -> list[str]:
    """Ids of the messages Dramatiq's worker logged ``Message … was skipped.`` for."""
    return [
        r.args[0].message_id  # type: ignore[index,union-attr]
        for r in log.records
        if r.name == "dramatiq.worker.WorkerThread" and "was skipped" in r.getMessage()
    ]


def test_not_sent(cachify: Cachify, stub_broker: StubBroker, task_log: pytest.LogCaptureFixture) -> None:
    @dramatiq.actor(once_key="k-{x}")
    def job(x: int) -> None: ...

    held = job.send(1)
    job.send(1)
    key = re.escape(f"{cachify.prefix}k-1-once")
    [line] = lines(task_log)
    assert re.fullmatch(
        rf"cachify: task job\[[0-9a-f-]{{36}}\] not sent: {key} is held by task {held.message_id}", line
    )
    assert held.message_id not in line.split("]")[0]  # the id is the refused message's own


def test_skipped_and_no_dramatiq_warning(
    cachify: Cachify,
    stub_broker: StubBroker,
    stub_worker: dramatiq.Worker,
    results_backend: StubBackend,
    task_log: pytest.LogCaptureFixture,
) -> None:
    gate, started = threading.Event(), threading.Event()

    @dramatiq.actor(once_key="k", once_mode="running", store_results=True)
    def job(n: int) -> None:
        started.set()
        gate.wait(GATE_TIMEOUT_S)

    first = job.send(1)
    assert started.wait(GATE_TIMEOUT_S)
    second = job.send(2)
    assert second.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) is None
    gate.set()
    drain(stub_broker, stub_worker)
    expected = f"cachify: task job[{second.message_id}] skipped: duplicate: {cachify.prefix}k-once is held by task {first.message_id}"
    assert expected in lines(task_log)
    assert dramatiq_skips(task_log) == []


def test_a_skip_by_another_middleware_keeps_dramatiqs_warning(
    stub_broker: StubBroker, make_worker: Callable[..., dramatiq.Worker], task_log: pytest.LogCaptureFixture
) -> None:
    @dramatiq.actor(once_key="k", max_age=1)
    def stale() -> None: ...

    message = stale.send()
    time.sleep(0.05)  # older than max_age when the worker sees it: AgeLimit skips it
    drain(stub_broker, make_worker(), fail_fast=False)
    assert dramatiq_skips(task_log) == [message.message_id]


def test_requeued(
    cachify: Cachify,
    stub_broker: StubBroker,
    stub_worker: dramatiq.Worker,
    results_backend: StubBackend,
    task_log: pytest.LogCaptureFixture,
) -> None:
    gate, started = threading.Event(), threading.Event()

    @dramatiq.actor(
        pool_key="one",
        pool_max_size=1,
        pool_max_waiting=0,  # never parks: the fallback, back through the broker
        pool_backoff=(0.005, 0.02),
        store_results=True,
    )
    def job(i: int) -> int:
        if i == 0:
            started.set()
            gate.wait(GATE_TIMEOUT_S)
        return i

    job.send(0)
    assert started.wait(GATE_TIMEOUT_S)
    waiting = job.send(1)
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not any("requeued (1)" in m for m in lines(task_log)) and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    assert waiting.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == 1
    drain(stub_broker, stub_worker)
    key = re.escape(f"{cachify.prefix}one-pool")
    pattern = rf"cachify: task job\[{waiting.message_id}\] requeued \(1\) in 0\.0\ds: pool {key} full"
    assert any(re.fullmatch(pattern, m) for m in lines(task_log)), lines(task_log)
    assert dramatiq_skips(task_log) == []  # a requeue is cachify's skip too


def test_parked(
    cachify: Cachify,
    stub_broker: StubBroker,
    stub_worker: dramatiq.Worker,
    results_backend: StubBackend,
    task_log: pytest.LogCaptureFixture,
) -> None:
    gate, started = threading.Event(), threading.Event()

    @dramatiq.actor(pool_key="one", pool_max_size=1, store_results=True)
    def job(i: int) -> int:
        if i == 0:
            started.set()
            gate.wait(GATE_TIMEOUT_S)
        return i

    job.send(0)
    assert started.wait(GATE_TIMEOUT_S)
    waiting = job.send(1)
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not any("parked" in m for m in lines(task_log)) and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    # The parked delivery stored no None: the result is the handed-over copy's.
    assert waiting.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == 1
    drain(stub_broker, stub_worker)
    key = re.escape(f"{cachify.prefix}one-pool")
    pattern = rf"cachify: task job\[{waiting.message_id}\] parked in the waiting room of {key}"
    assert any(re.fullmatch(pattern, m) for m in lines(task_log)), lines(task_log)
    assert not any("requeued" in m for m in lines(task_log))
    assert dramatiq_skips(task_log) == []  # a park is cachify's skip too


def test_cache_hit(
    stub_broker: StubBroker,
    stub_worker: dramatiq.Worker,
    results_backend: StubBackend,
    task_log: pytest.LogCaptureFixture,
) -> None:
    @dramatiq.actor(cache_key="sq-{x}", store_results=True)
    def square(x: int) -> int:
        return x * x

    miss = square.send(7)
    assert miss.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == 49
    hit = square.send(7)
    assert hit.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == 49
    drain(stub_broker, stub_worker)
    ran, record = [r for r in task_log.records if r.name == "cachify.tasks"]
    assert (ran.levelno, record.levelno) == (logging.DEBUG, logging.DEBUG)
    assert ran.getMessage() == f"cachify: task square[{miss.message_id}] admitted to run (requeues 0)"
    assert re.fullmatch(
        rf"cachify: task square\[{hit.message_id}\] cache hit: \S*sq-7\S*", record.getMessage()
    )
