"""The log lines come from the core's ``cachify.tasks`` logger, one per event, each naming the
task, the task id and the key; the integration adds none of its own for these events."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from taskiq import InMemoryBroker

from cachify_core import Cachify
from cachify_taskiq import REQUEUES_LABEL

from .conftest import eventually
from .probes import Probe, declare

pytestmark = pytest.mark.timeout(30)

FAST_BACKOFF = (0.01, 0.05)


async def _true(value: bool) -> bool:
    return value


async def result_of(handle: Any) -> Any:
    return await handle.wait_result(check_interval=0.01, timeout=10)


def lines(caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    """The messages of cachify's records containing ``word``; each must be the core's."""
    found = [r for r in caplog.records if r.name.startswith("cachify") and word in r.getMessage()]
    assert {r.name for r in found} <= {"cachify.tasks"}, [(r.name, r.getMessage()) for r in found]
    return [r.getMessage() for r in found]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="cachify")
    return caplog


async def test_not_sent_and_skipped(
    make_broker: Callable[..., InMemoryBroker], cachify: Cachify, logs: pytest.LogCaptureFixture
) -> None:
    broker = make_broker()
    probe = Probe()
    probe.hold_first = True
    task = declare(
        broker, "async", probe, once_key="order-{i}", pool_key="one", pool_max_size=1, pool_on_full="drop"
    )
    await broker.startup()

    holder = await task.kiq(0)
    await eventually(lambda: _true(probe.now == 1), 5, "the holder started")
    await task.kicker().with_task_id("dup-1").kiq(0)
    dropped = await task.kicker().with_task_id("drop-1").kiq(1)
    await eventually(lambda: _true(bool(lines(logs, "skipped"))), 5, "the drop was logged")
    probe.hold.set()
    await result_of(holder)

    once_key = f"{cachify.prefix}order-0-once"
    [not_sent] = lines(logs, "not sent")
    assert f"task {task.task_name}[dup-1] not sent: {once_key} is held by task {holder.task_id}" in not_sent
    [skipped] = lines(logs, "skipped")
    assert f"task {task.task_name}[{dropped.task_id}] skipped: pool {cachify.prefix}one-pool full" in skipped


async def test_requeued_and_cache_hit(
    make_broker: Callable[..., InMemoryBroker], cachify: Cachify, logs: pytest.LogCaptureFixture
) -> None:
    broker = make_broker()
    probe = Probe()
    probe.hold_first = True
    task = declare(  # no waiting room: the backoff requeue
        broker, "async", probe, pool_key="one", pool_max_size=1, pool_backoff=FAST_BACKOFF, pool_max_waiting=0
    )
    cached = declare(broker, "async", Probe(), cache_key="square-{i}")
    await broker.startup()

    holder = await task.kiq(0)
    await eventually(lambda: _true(probe.now == 1), 5, "the holder started")
    waiter = await task.kiq(1)
    await eventually(lambda: _true(bool(lines(logs, "requeued"))), 5, "a requeue was logged")
    probe.hold.set()
    await result_of(holder)
    assert (await result_of(waiter)).return_value == 10

    requeued = lines(logs, "requeued")
    assert requeued[0].startswith(f"cachify: task {task.task_name}[{waiter.task_id}] requeued (1) in ")
    assert requeued[0].endswith(f"s: pool {cachify.prefix}one-pool full")

    await result_of(await cached.kiq(3))
    hit = await cached.kiq(3)
    assert (await result_of(hit)).return_value == 30
    [line] = lines(logs, "cache hit")
    assert line == f"cachify: task {cached.task_name}[{hit.task_id}] cache hit: square-3-cached"


async def test_parked(
    make_broker: Callable[..., InMemoryBroker], cachify: Cachify, logs: pytest.LogCaptureFixture
) -> None:
    broker = make_broker()
    probe = Probe()
    probe.hold_first = True
    task = declare(broker, "async", probe, pool_key="one", pool_max_size=1)
    await broker.startup()

    holder = await task.kiq(0)
    await eventually(lambda: _true(probe.now == 1), 5, "the holder started")
    waiter = await task.kiq(1)
    await eventually(lambda: _true(bool(lines(logs, "parked"))), 5, "the park was logged")
    probe.hold.set()
    await result_of(holder)
    result = await result_of(waiter)
    assert result.return_value == 10
    assert result.labels[REQUEUES_LABEL] == 1  # kicked again once, by the holder's release

    [parked] = lines(logs, "parked")
    assert (
        parked
        == f"cachify: task {task.task_name}[{waiter.task_id}] parked in the waiting room of {cachify.prefix}one-pool"
    )
    assert not lines(logs, "requeued")
