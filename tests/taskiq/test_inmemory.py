"""Every task option on an InMemoryBroker, for async and sync tasks, on the memory and Redis
backends (the suite's ``cachify`` fixture)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from taskiq import (
    InMemoryBroker,
    SimpleRetryMiddleware,
    TaskiqMessage,
    TaskiqMiddleware,
)
from taskiq.exceptions import NoResultError, SendTaskError
from taskiq.message import BrokerMessage

from cachify_core import Cachify, CachifyPoolFullError
from cachify_taskiq import REQUEUES_LABEL, CachifyDuplicateError

from .conftest import eventually
from .probes import KINDS, Probe, declare

pytestmark = pytest.mark.timeout(60)

FAST_BACKOFF = (0.01, 0.05)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def result_of(handle: Any, timeout: float = 10) -> Any:
    return await handle.wait_result(check_interval=0.01, timeout=timeout)


async def never_ready(handle: Any, wait_s: float = 0.3) -> bool:
    await asyncio.sleep(wait_s)
    return not await handle.is_ready()


# -- once_* -------------------------------------------------------------------------------------
async def test_duplicates_get_the_holders_handle_and_result(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = Probe(seconds=0.2)
    task = declare(broker, kind, probe, once_key="order-{i}")
    await broker.startup()

    handles = [await task.kiq(1) for _ in range(50)]
    assert len({h.task_id for h in handles}) == 1
    results = await asyncio.gather(*(result_of(h) for h in handles))
    assert {r.return_value for r in results} == {10}
    assert probe.runs == 1

    other = await task.kiq(2)  # another key is not a duplicate
    assert other.task_id != handles[0].task_id
    assert (await result_of(other)).return_value == 20
    again = await task.kiq(1)  # the hold ended with the run
    assert again.task_id != handles[0].task_id
    assert (await result_of(again)).return_value == 10
    assert probe.runs == 3


async def test_once_raise_raises_with_the_holders_id(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = Probe(seconds=0.2)
    task = declare(broker, kind, probe, once_key="order-{i}", once_raise=True)
    await broker.startup()

    first = await task.kiq(1)
    with pytest.raises(CachifyDuplicateError) as caught:
        await task.kiq(1)
    assert caught.value.holder_id == first.task_id
    assert (await result_of(first)).return_value == 10
    assert probe.runs == 1


async def test_running_mode_skips_a_duplicate_run(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = Probe(seconds=0.3)
    task = declare(broker, kind, probe, once_key="order-{i}", once_mode="running")
    await broker.startup()

    first = await task.kiq(1)
    await eventually(lambda: _true(probe.now == 1), 5, "the first run started")
    duplicate = await task.kiq(1)  # sent (no enqueue-time hold), skipped when it runs
    assert duplicate.task_id != first.task_id
    assert (await result_of(first)).return_value == 10
    assert await never_ready(duplicate)  # acknowledged without a result
    assert probe.runs == 1
    assert (await result_of(await task.kiq(1))).return_value == 10
    assert probe.runs == 2


class Gate(TaskiqMiddleware):
    """Holds every delivery before it starts until ``opened`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = asyncio.Event()

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        await self.opened.wait()
        return message


async def test_until_started_holds_from_send_until_start(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    gate = Gate()
    broker = make_broker(middlewares=(gate,))
    probe = Probe(seconds=0.3)
    task = declare(broker, kind, probe, once_key="order-{i}", once_mode="until_started")
    await broker.startup()

    queued = await task.kiq(1)
    assert (await task.kiq(1)).task_id == queued.task_id  # not started yet: a duplicate
    gate.opened.set()
    await eventually(lambda: _true(probe.now == 1), 5, "the first run started")
    second = await task.kiq(1)  # started: one more may be queued
    assert second.task_id != queued.task_id
    assert (await result_of(queued)).return_value == 10
    assert (await result_of(second)).return_value == 10
    assert probe.runs == 2


async def test_a_retry_is_the_holder_and_keeps_the_hold(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker(middlewares=(SimpleRetryMiddleware(default_retry_count=5),))
    probe = Probe(seconds=0.1, failures=2)
    task = declare(broker, kind, probe, once_key="order-{i}", retry_on_error=True)
    await broker.startup()

    first = await task.kiq(1)
    await eventually(lambda: _true(probe.runs >= 2), 5, "a retry started")
    assert (await task.kiq(1)).task_id == first.task_id  # the hold outlived the failed run
    result = await result_of(first)
    assert (result.is_err, result.return_value) == (False, 10)
    assert probe.runs == 3
    assert (await task.kiq(1)).task_id != first.task_id  # released after the last run


async def test_a_retry_is_sent_even_with_once_raise(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    """A retry re-sends its own task id: never refused, never raised as a duplicate."""
    broker = make_broker(middlewares=(SimpleRetryMiddleware(default_retry_count=5),))
    probe = Probe(failures=2)
    task = declare(broker, kind, probe, once_key="order-{i}", once_raise=True, retry_on_error=True)
    await broker.startup()

    first = await task.kiq(1)
    result = await result_of(first)
    assert (result.is_err, result.return_value, result.labels["_retries"]) == (False, 10, 2)
    assert probe.runs == 3
    assert (await result_of(await task.kiq(1))).return_value == 10  # released after the last run


class FlakyBroker(InMemoryBroker):
    fail = False

    async def kick(self, message: BrokerMessage) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        await super().kick(message)


async def test_a_failed_send_releases_the_hold(cachify: Cachify, kind: str) -> None:
    from cachify_taskiq import CachifyMiddleware

    broker = FlakyBroker(max_stored_results=-1).with_middlewares(CachifyMiddleware(cachify=cachify))
    probe = Probe()
    task = declare(broker, kind, probe, once_key="order-{i}")
    await broker.startup()
    try:
        broker.fail = True
        with pytest.raises(SendTaskError):
            await task.kiq(1)
        broker.fail = False
        handle = await task.kiq(1)  # not a duplicate of the send that failed
        assert (await result_of(handle)).return_value == 10
    finally:
        await broker.wait_all()
        await broker.shutdown()


# -- pool_* -------------------------------------------------------------------------------------
async def test_a_pool_caps_concurrency_and_runs_each_task_once(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = Probe(seconds=0.01)
    task = declare(broker, kind, probe, pool_key="erp", pool_max_size=3, pool_backoff=FAST_BACKOFF)
    await broker.startup()

    handles = [await task.kiq(i) for i in range(60)]
    results = await asyncio.gather(*(result_of(h, 30) for h in handles))
    assert [r.return_value for r in results] == [i * 10 for i in range(60)]  # each on its own id
    assert sorted(probe.ran) == list(range(60))
    assert probe.peak <= 3
    assert any(r.labels.get(REQUEUES_LABEL, 0) > 0 for r in results)  # the pool did push back
    assert not any("_retries" in r.labels for r in results)  # requeues spend no retry budget


def _holding(probe: Probe) -> Probe:
    probe.hold_first = True
    return probe


async def test_pool_on_full_drop_skips_and_releases_the_hold(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = _holding(Probe())
    task = declare(
        broker, kind, probe, once_key="job-{i}", pool_key="one", pool_max_size=1, pool_on_full="drop"
    )
    await broker.startup()

    holder = await task.kiq(0)
    await eventually(lambda: _true(probe.now == 1), 5, "the holder started")
    dropped = await task.kiq(1)
    assert await never_ready(dropped)
    second = await task.kiq(1)
    assert second.task_id != dropped.task_id  # its dedup hold was given back
    assert await never_ready(second)  # and dropped too: the pool is still full
    probe.hold.set()
    assert (await result_of(holder)).return_value == 0
    assert sorted(probe.ran) == [0]


async def test_a_parked_message_delivered_again_is_not_parked_twice(
    make_broker: Callable[..., InMemoryBroker], cachify: Cachify, kind: str
) -> None:
    """A worker that dies between parking a message and acknowledging it: the stream delivers
    the same message (same task id, retries and requeues) again. It is recognised by its park
    id and acknowledged, so the task waits once and runs once."""
    broker = make_broker()
    probe = _holding(Probe())
    task = declare(broker, kind, probe, pool_key="again", pool_max_size=1)
    await broker.startup()
    sent: list[BrokerMessage] = []
    kick = broker.kick

    async def recording(message: BrokerMessage) -> None:
        sent.append(message)
        await kick(message)

    broker.kick = recording  # type: ignore[method-assign]
    room = cachify.pool("again", 1)

    async def parked(count: int) -> bool:
        return (await room.awaiting()).parked == count

    holder = await task.kiq(0)
    await eventually(lambda: _true(probe.now == 1), 5, "the holder started")
    waiting = await task.kiq(1)
    await eventually(lambda: parked(1), 5, "the second parked")
    [again] = [m for m in sent if m.task_id == waiting.task_id]
    await kick(again)  # the same message once more, as a reclaimed stream entry brings it
    await asyncio.sleep(0.2)  # received: recognised, acknowledged
    assert await parked(1)
    probe.hold.set()
    assert (await result_of(holder)).return_value == 0
    assert (await result_of(waiting)).return_value == 10
    await broker.wait_all()
    assert sorted(probe.ran) == [0, 1]  # it ran once


async def test_pool_on_full_raise_fails_the_task(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = _holding(Probe())
    task = declare(broker, kind, probe, pool_key="one", pool_max_size=1, pool_on_full="raise")
    await broker.startup()

    holder = await task.kiq(0)
    await eventually(lambda: _true(probe.now == 1), 5, "the holder started")
    result = await result_of(await task.kiq(1))
    assert result.is_err
    assert isinstance(result.error, CachifyPoolFullError)
    probe.hold.set()
    assert (await result_of(holder)).return_value == 0


async def test_pool_on_full_callable_is_the_result(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = _holding(Probe())
    task = declare(broker, kind, probe, pool_key="one", pool_max_size=1, pool_on_full=lambda i: -i)
    await broker.startup()

    holder = await task.kiq(0)
    await eventually(lambda: _true(probe.now == 1), 5, "the holder started")
    assert (await result_of(await task.kiq(7))).return_value == -7
    probe.hold.set()
    await result_of(holder)
    assert probe.runs == 1


async def test_an_async_pool_on_full_callable_is_awaited(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    async def fallback(i: int) -> int:
        return -i

    broker = make_broker()
    probe = _holding(Probe())
    task = declare(broker, kind, probe, pool_key="one", pool_max_size=1, pool_on_full=fallback)
    await broker.startup()

    holder = await task.kiq(0)
    await eventually(lambda: _true(probe.now == 1), 5, "the holder started")
    assert (await result_of(await task.kiq(7))).return_value == -7
    probe.hold.set()
    await result_of(holder)


async def test_pool_max_requeues_then_fails(make_broker: Callable[..., InMemoryBroker], kind: str) -> None:
    """Without a waiting room (``pool_max_waiting=0``) a full pool backs off; a parked task
    never gives up (its requeues are hand-overs)."""
    broker = make_broker()
    probe = _holding(Probe())
    task = declare(
        broker,
        kind,
        probe,
        pool_key="one",
        pool_max_size=1,
        pool_backoff=FAST_BACKOFF,
        pool_max_requeues=2,
        pool_max_waiting=0,
    )
    await broker.startup()

    holder = await task.kiq(0)
    await eventually(lambda: _true(probe.now == 1), 5, "the holder started")
    result = await result_of(await task.kiq(1))
    assert result.is_err
    assert isinstance(result.error, CachifyPoolFullError)
    assert "gave up after 2 requeues" in str(result.error)
    assert result.labels[REQUEUES_LABEL] == 2
    probe.hold.set()
    await result_of(holder)


async def test_pool_full_raised_by_the_body_is_requeued(
    make_broker: Callable[..., InMemoryBroker], cachify: Cachify, kind: str
) -> None:
    """A stacked ``pool(...)`` inside a task with no cachify option at all gets requeues too."""
    broker = make_broker()
    probe = Probe(seconds=0.02)
    inner = cachify.pool("inner", max_size=1)
    task = declare(broker, kind, probe, body=lambda: inner)
    await broker.startup()

    handles = [await task.kiq(i) for i in range(8)]
    results = await asyncio.gather(*(result_of(h, 30) for h in handles))
    assert [r.return_value for r in results] == [i * 10 for i in range(8)]
    assert sorted(probe.ran) == list(range(8))
    assert any(r.labels.get(REQUEUES_LABEL, 0) > 0 for r in results)


async def test_error_releases_the_hold_and_the_slot(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = Probe(failures=1)
    task = declare(broker, kind, probe, once_key="job-{i}", pool_key="one", pool_max_size=1)
    await broker.startup()

    failed = await task.kiq(1)
    assert (await result_of(failed)).is_err
    again = await task.kiq(1)
    assert again.task_id != failed.task_id
    assert (await result_of(again)).return_value == 10


# -- cache_* ------------------------------------------------------------------------------------
async def test_a_cache_hit_is_the_result_without_running(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = Probe(failures=1)
    task = declare(broker, kind, probe, cache_key="square-{i}")
    await broker.startup()

    assert (await result_of(await task.kiq(3))).is_err  # a failure is not cached
    assert (await result_of(await task.kiq(3))).return_value == 30
    hit = await result_of(await task.kiq(3))
    assert (hit.is_err, hit.return_value) == (False, 30)
    assert probe.runs == 2


async def test_cache_ttl_expires(make_broker: Callable[..., InMemoryBroker], kind: str) -> None:
    broker = make_broker()
    probe = Probe()
    task = declare(broker, kind, probe, cache_key="square-{i}", cache_ttl=0.2)
    await broker.startup()

    await result_of(await task.kiq(3))
    await result_of(await task.kiq(3))
    assert probe.runs == 1
    await asyncio.sleep(0.3)
    await result_of(await task.kiq(3))
    assert probe.runs == 2


async def test_all_three_options_together(make_broker: Callable[..., InMemoryBroker], kind: str) -> None:
    broker = make_broker()
    probe = Probe(seconds=0.05)
    task = declare(
        broker,
        kind,
        probe,
        cache_key="sync-{i}",
        once_key="sync-{i}",
        pool_key="erp",
        pool_max_size=2,
        pool_backoff=FAST_BACKOFF,
    )
    await broker.startup()

    # Every run waits until all 40 are sent: a run that ended mid-loop would free its hold, and
    # the next send of its key would rightly be a new task (seen on a loaded CI machine).
    probe.hold_all = True
    handles = [await task.kiq(i % 5) for i in range(40)]
    assert len({h.task_id for h in handles}) == 5
    probe.hold.set()
    results = await asyncio.gather(*(result_of(h, 30) for h in handles))
    assert [r.return_value for r in results] == [(i % 5) * 10 for i in range(40)]
    assert probe.runs == 5
    assert probe.peak <= 2
    await result_of(await task.kiq(2))  # a cache hit now
    assert probe.runs == 5


async def test_taskiqs_skip_warning_is_kept_for_the_bodys_own_no_result_error(
    make_broker: Callable[..., InMemoryBroker], caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker()
    probe = _holding(Probe())
    task = declare(broker, "async", probe, pool_key="one", pool_max_size=1, pool_on_full="drop")

    @broker.task("skipper")
    async def skipper() -> None:
        raise NoResultError()

    await broker.startup()
    caplog.set_level(logging.WARNING, logger="taskiq.receiver.receiver")
    holder = await task.kiq(0)
    await eventually(lambda: _true(probe.now == 1), 5, "the holder started")
    assert await never_ready(await task.kiq(1))  # dropped by cachify: no Taskiq warning
    assert await never_ready(await skipper.kiq())  # the body's own: Taskiq warns
    probe.hold.set()
    await result_of(holder)
    skipped = [r for r in caplog.records if "skipped setting result" in r.getMessage()]
    assert [r.args[0] for r in skipped] == ["skipper"]  # type: ignore[index]


# -- outside a worker ----------------------------------------------------------------------------
async def test_calling_the_task_function_directly_bypasses_cachify(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = Probe()
    task = declare(broker, kind, probe, once_key="x", cache_key="x")
    await broker.startup()
    value = task(4)
    if kind == "async":
        value = await value
    value2 = task(4)
    if kind == "async":
        value2 = await value2
    assert (value, value2, probe.runs) == (40, 40, 2)


async def _true(value: bool) -> bool:
    return value
