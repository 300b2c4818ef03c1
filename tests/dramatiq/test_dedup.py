"""``once_*`` on a StubBroker with an in-process worker: handles, modes, and the hold's
lifetime across success, failure, retry, delay, skip and a failed publish."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, MiddlewareError
from dramatiq.results.backends import StubBackend

from cachify_core import Cachify
from cachify_core.tasks import TaskPolicy, parse_task_options
from cachify_dramatiq import CachifyDuplicateError, CachifyDuplicateMessage, CachifySendError

from .conftest import drain

RESULT_TIMEOUT_MS = 10_000
GATE_TIMEOUT_S = 10.0


def wait_for(event: threading.Event) -> None:
    assert event.wait(GATE_TIMEOUT_S), "timed out waiting for the task to start"


def test_duplicate_send_returns_the_holders_handle(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend
) -> None:
    gate, runs = threading.Event(), []

    @dramatiq.actor(once_key="sync-{order_id}", store_results=True)
    def sync_order(order_id: int) -> str:
        runs.append(order_id)
        gate.wait(GATE_TIMEOUT_S)
        return f"synced-{order_id}"

    first = sync_order.send(1)
    duplicates = [sync_order.send(1) for _ in range(20)]
    sync_order.send(2)  # another key is not a duplicate
    assert {d.message_id for d in duplicates} == {first.message_id}
    gate.set()
    assert (
        duplicates[-1].get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS)
        == "synced-1"
    )
    drain(stub_broker, stub_worker)
    assert sorted(runs) == [1, 2]
    # Released on success: the next send is a message of its own.
    assert sync_order.send(1).message_id != first.message_id


def test_once_raise_and_plain_enqueue_raise(stub_broker: StubBroker) -> None:
    @dramatiq.actor(once_key="k-{x}", once_raise=True)
    def strict(x: int) -> None: ...

    @dramatiq.actor(once_key="k2-{x}")
    def lenient(x: int) -> None: ...

    first = strict.send(1)
    with pytest.raises(CachifyDuplicateError) as info:
        strict.send(1)
    assert info.value.holder_id == first.message_id
    assert isinstance(info.value, CachifyDuplicateMessage)
    assert info.value.holder.message_id == first.message_id

    held = lenient.send(1)
    # A plain broker.enqueue (pipelines, groups) has no handle to return: it raises.
    with pytest.raises(CachifyDuplicateMessage) as dup:
        stub_broker.enqueue(lenient.message(1))
    assert dup.value.holder.message_id == held.message_id
    assert stub_broker.queues["default"].qsize() == 2


def test_until_started_allows_one_queued_and_one_running(
    stub_broker: StubBroker, make_worker: Callable[..., dramatiq.Worker]
) -> None:
    gate, started, runs = threading.Event(), threading.Event(), []

    @dramatiq.actor(once_key="k", once_mode="until_started")
    def job(n: int) -> None:
        runs.append(n)
        started.set()
        gate.wait(GATE_TIMEOUT_S)

    worker = make_worker(threads=1)  # the second message stays queued behind the first
    first = job.send(1)
    wait_for(started)
    second = job.send(2)
    third = job.send(3)
    assert second.message_id != first.message_id
    assert third.message_id == second.message_id
    gate.set()
    drain(stub_broker, worker)
    assert runs == [1, 2]


def test_running_mode_skips_a_concurrent_duplicate(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend
) -> None:
    gate, started, runs = threading.Event(), threading.Event(), []

    @dramatiq.actor(once_key="k", once_mode="running", store_results=True)
    def job(n: int) -> str:
        runs.append(n)
        started.set()
        gate.wait(GATE_TIMEOUT_S)
        return "ran"

    first = job.send(1)
    wait_for(started)
    second = job.send(2)  # enqueued: mode "running" holds nothing at send
    assert second.message_id != first.message_id
    assert (
        second.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) is None
    )  # skipped
    gate.set()
    assert first.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == "ran"
    drain(stub_broker, stub_worker)
    assert runs == [1]
    job.send(3)  # released on success
    drain(stub_broker, stub_worker)
    assert runs == [1, 3]


def test_a_retry_is_the_holder_and_keeps_the_hold(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend
) -> None:
    attempts: list[int] = []
    failed = threading.Event()

    @dramatiq.actor(once_key="k", max_retries=2, min_backoff=300, max_backoff=300, store_results=True)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            failed.set()
            raise RuntimeError("first attempt fails")
        return "ok"

    first = flaky.send()
    wait_for(failed)
    time.sleep(0.05)  # Retries has re-enqueued it with a 300 ms delay by now
    assert flaky.send().message_id == first.message_id  # still held between attempts
    assert first.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == "ok"
    drain(stub_broker, stub_worker)
    assert len(attempts) == 2
    assert flaky.send().message_id != first.message_id


def test_failure_releases_the_hold(stub_broker: StubBroker, stub_worker: dramatiq.Worker) -> None:
    @dramatiq.actor(once_key="k", max_retries=0)
    def broken() -> None:
        raise RuntimeError("no")

    first = broken.send()
    drain(stub_broker, stub_worker, fail_fast=False)
    assert broken.send().message_id != first.message_id


def test_a_delayed_message_falling_due_is_not_a_duplicate(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker
) -> None:
    runs: list[int] = []

    @dramatiq.actor(once_key="k-{x}")
    def later(x: int) -> None:
        runs.append(x)

    first = later.send_with_options(args=(1,), delay=200)
    assert later.send(1).message_id == first.message_id
    drain(stub_broker, stub_worker)
    assert runs == [1]


def test_a_failed_publish_releases_the_hold(stub_broker: StubBroker) -> None:
    class Outage(Middleware):
        down = True

        def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
            if self.down:
                raise MiddlewareError("broker unreachable")

    @dramatiq.actor(once_key="k")
    def job() -> None: ...

    outage = Outage()
    stub_broker.add_middleware(outage)  # after cachify's: the hold is taken, then the publish fails
    with pytest.raises(MiddlewareError, match="unreachable"):
        job.send()
    outage.down = False
    first = job.send()
    assert job.send().message_id == first.message_id
    assert stub_broker.queues["default"].qsize() == 1


def test_a_message_skipped_by_another_middleware_releases_the_hold(
    stub_broker: StubBroker, make_worker: Callable[..., dramatiq.Worker]
) -> None:
    runs: list[int] = []

    @dramatiq.actor(once_key="k", max_age=1)
    def stale() -> None:
        runs.append(1)

    first = stale.send()
    time.sleep(0.05)  # older than max_age when the worker sees it: AgeLimit skips it
    worker = make_worker()
    drain(stub_broker, worker, fail_fast=False)
    assert runs == []
    assert stale.send().message_id != first.message_id


def test_a_hold_that_cannot_be_taken_sends_nothing(stub_broker: StubBroker) -> None:
    @dramatiq.actor(once_key="k-{order.id}")
    def job(order: Any) -> None: ...

    with pytest.raises(CachifySendError, match="task 'job': message not sent") as info:
        job.send(1)  # an int has no .id: the key cannot be built, so deduplication cannot work
    assert isinstance(info.value.__cause__, ValueError)
    assert stub_broker.queues["default"].qsize() == 0


def test_a_retry_is_sent_even_when_another_took_its_key_meanwhile(
    cachify: Cachify,
    stub_broker: StubBroker,
    stub_worker: dramatiq.Worker,
    results_backend: StubBackend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[int] = []
    retry_sent = threading.Event()

    class RetrySeen(Middleware):
        def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
            if message.options.get("retries"):
                retry_sent.set()

    stub_broker.add_middleware(RetrySeen())

    def flaky() -> None:
        attempts.append(1)
        raise RuntimeError("fails")

    flaky_actor = dramatiq.actor(once_key="k", max_retries=1, min_backoff=300, max_backoff=300)(flaky)
    key = TaskPolicy(parse_task_options("flaky", flaky, {"once_key": "k"}), cachify).once_key((), {})
    assert key is not None
    caplog.set_level(logging.INFO, logger="cachify.tasks")
    first = flaky_actor.send()
    wait_for(retry_sent)  # Retries has put it in the delay queue, its hold kept for it
    backend = cachify.sync_backend
    assert backend.lock_holder(key) == first.message_id
    backend.lock_force_release(key)  # as if the hold had expired, and another message took it
    assert backend.lock_acquire(key, "intruder", 60_000, False)
    drain(stub_broker, stub_worker, fail_fast=False)
    # Sent when it fell due (a retry is never refused at send), then skipped when it ran.
    assert attempts == [1]
    lines = [r.getMessage() for r in caplog.records if r.name == "cachify.tasks"]
    assert (
        f"cachify: task flaky[{first.message_id}] skipped: duplicate: {key} is held by task intruder" in lines
    )
    assert any(
        f"task flaky[{first.message_id}] re-sent while {key} is held by task intruder" in m for m in lines
    )
    assert backend.lock_holder(key) == "intruder"  # the skip released nothing of the other's
