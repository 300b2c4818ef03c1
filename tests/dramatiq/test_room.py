"""The waiting room on a StubBroker with an in-process worker (memory and Redis stores): what a
parked message leaves in the room, the hand-over as it is published, dedup holds across a park,
and the fallback when the room is full."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message
from dramatiq.middleware import CurrentMessage
from dramatiq.results.backends import StubBackend

from cachify_core import Cachify
from cachify_core.tasks import RESERVATION_FIELD, handover
from cachify_dramatiq import REQUEUES_OPTION
from cachify_dramatiq.room import FRAMEWORK, payload, publish_one

from .conftest import drain

RESULT_TIMEOUT_MS = 10_000
GATE_TIMEOUT_S = 10.0


def test_payload_is_the_same_message_requeued_once_without_its_reservation(stub_broker: StubBroker) -> None:
    @dramatiq.actor(pool_key="p", pool_max_size=1)
    def job(i: int) -> None: ...

    message = job.message(1).copy(options={RESERVATION_FIELD: "old-entry", "retries": 2, REQUEUES_OPTION: 3})
    framed = payload(message, 3)
    assert framed.startswith(FRAMEWORK.encode() + b"\n")
    again = Message.decode(framed[len(FRAMEWORK) + 1 :])
    assert (again.message_id, again.queue_name, again.args) == (message.message_id, "default", (1,))
    assert again.options["retries"] == 2  # a park is not a retry
    assert again.options[REQUEUES_OPTION] == 4
    assert RESERVATION_FIELD not in again.options  # the publisher sets the new one
    assert message.options[RESERVATION_FIELD] == "old-entry"  # the delivery's own is untouched

    publish_one(stub_broker, "new-entry", framed[len(FRAMEWORK) + 1 :])
    [published] = [Message.decode(m) for m in stub_broker.queues["default"].queue]
    assert published.message_id == message.message_id
    assert published.options[RESERVATION_FIELD] == "new-entry"


def test_parked_messages_keep_their_dedup_holds_and_run_once(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend
) -> None:
    gate, started = threading.Event(), threading.Event()
    seen: list[tuple[int, int, bool]] = []

    @dramatiq.actor(once_key="k-{i}", pool_key="one", pool_max_size=1, max_retries=0, store_results=True)
    def job(i: int) -> int:
        options: dict[str, Any] = CurrentMessage.get_current_message().options  # type: ignore[union-attr]
        seen.append((i, options.get(REQUEUES_OPTION, 0), RESERVATION_FIELD in options))
        if i == 0:
            started.set()
            gate.wait(GATE_TIMEOUT_S)
        return i * 10

    first = job.send(0)
    assert started.wait(GATE_TIMEOUT_S)
    parked = [job.send(i) for i in range(1, 5)]
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while len(stub_broker.queues["default"].queue) and time.monotonic() < deadline:
        time.sleep(0.01)  # consumed: each parked (acknowledged, its hold kept)
    time.sleep(0.1)
    # A parked message still holds its key: a duplicate send gets its handle, nothing is sent.
    assert job.send(2).message_id == parked[1].message_id
    gate.set()
    results = [h.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) for h in parked]
    assert results == [10, 20, 30, 40]  # the copies' results: the parked deliveries stored none
    assert first.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == 0
    drain(stub_broker, stub_worker)
    assert sorted(i for i, _, _ in seen) == [0, 1, 2, 3, 4]  # each ran once, the re-sends too
    assert all(requeues == 1 and reserved for i, requeues, reserved in seen if i)
    # The holds ended with the runs: a new send is a new message.
    assert job.send(2).message_id != parked[1].message_id
    drain(stub_broker, stub_worker)


def test_a_full_room_falls_back_to_requeues(
    cachify: Cachify, stub_broker: StubBroker, stub_worker: dramatiq.Worker, results_backend: StubBackend
) -> None:
    gate, started = threading.Event(), threading.Event()
    requeues: dict[int, int] = {}

    @dramatiq.actor(
        pool_key="one",
        pool_max_size=1,
        pool_max_waiting=1,
        pool_backoff=(0.005, 0.02),
        max_retries=0,
        store_results=True,
    )
    def job(i: int) -> int:
        options: dict[str, Any] = CurrentMessage.get_current_message().options  # type: ignore[union-attr]
        requeues[i] = options.get(REQUEUES_OPTION, 0)
        if i == 0:
            started.set()
            gate.wait(GATE_TIMEOUT_S)
        return i

    job.send(0)
    assert started.wait(GATE_TIMEOUT_S)
    handles = [job.send(i) for i in (1, 2)]
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while time.monotonic() < deadline and cachify.pool("one", 1).waiting().parked < 1:
        time.sleep(0.01)
    time.sleep(0.3)  # the one that did not fit backs off through the broker meanwhile
    gate.set()
    assert [
        h.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) for h in handles
    ] == [
        1,
        2,
    ]
    drain(stub_broker, stub_worker)
    assert sorted(requeues) == [0, 1, 2]
    assert max(requeues.values()) >= 2  # requeued more than once: it never found room to park
    assert cachify.pool("one", 1).waiting().parked == 0


def test_the_worker_runs_a_sweeper_while_it_runs(cachify: Cachify, stub_broker: StubBroker) -> None:
    @dramatiq.actor(pool_key="p", pool_max_size=1)
    def job() -> None: ...

    worker = dramatiq.Worker(stub_broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        assert any(key[1] == id(cachify) for key in handover._sweepers)
    finally:
        worker.stop()
    assert not any(key[1] == id(cachify) for key in handover._sweepers)


def test_a_parked_message_delivered_again_is_not_parked_twice(
    cachify: Cachify, stub_broker: StubBroker, stub_worker: dramatiq.Worker
) -> None:
    """A worker that dies between parking a message and acknowledging it: the broker delivers
    the same message (same id, retries and requeues) again. It is recognised by its park id and
    acknowledged, so the task waits once and runs once."""
    gate, started = threading.Event(), threading.Event()
    seen: list[int] = []

    @dramatiq.actor(pool_key="again", pool_max_size=1, max_retries=0)
    def job(i: int) -> None:
        seen.append(i)
        if i == 0:
            started.set()
            gate.wait(GATE_TIMEOUT_S)

    job.send(0)
    assert started.wait(GATE_TIMEOUT_S)
    message = job.send(1)
    room = cachify.pool("again", 1)
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while room.waiting().parked < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    stub_broker.enqueue(message)  # the same message once more, as a redelivery brings it
    while len(stub_broker.queues["default"].queue) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # consumed: recognised, acknowledged
    assert room.waiting().parked == 1
    gate.set()
    drain(stub_broker, stub_worker)
    assert seen == [0, 1]  # it ran once
