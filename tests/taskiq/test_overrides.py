"""Per-message overrides: ``task.kicker().with_labels(once_ttl=60, ...)``, validated at ``kiq``
by the core's ``TaskPolicies`` and applied in the worker (InMemoryBroker, both backends)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from taskiq import InMemoryBroker
from taskiq.message import BrokerMessage

from cachify_core import Cachify
from cachify_taskiq import OPTIONS_LABEL, CachifyDuplicateError, CachifyMiddleware, CachifyTaskOptionError

from .conftest import eventually
from .probes import Probe, declare

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["async", "sync"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def result_of(handle: Any, timeout: float = 10) -> Any:
    return await handle.wait_result(check_interval=0.01, timeout=timeout)


async def _true(value: bool) -> bool:
    return value


def _holding(probe: Probe) -> Probe:
    probe.hold_first = True
    return probe


async def test_once_key_none_turns_dedup_off_for_one_message(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = _holding(Probe())
    task = declare(broker, kind, probe, once_key="order-{i}")
    await broker.startup()

    holder = await task.kiq(0)
    await eventually(lambda: _true(probe.now == 1), 5, "the holder started")
    assert (await task.kiq(0)).task_id == holder.task_id  # declared: a duplicate
    free = await task.kicker().with_labels(once_key=None).kiq(0)
    assert free.task_id != holder.task_id
    await eventually(lambda: _true(probe.runs == 2), 5, "the message without dedup ran")
    # It neither took nor released the holder's hold.
    assert (await task.kiq(0)).task_id == holder.task_id
    probe.hold.set()
    assert (await result_of(holder)).return_value == 0
    result = await result_of(free)
    assert result.return_value == 0
    assert json.loads(result.labels[OPTIONS_LABEL]) == {"once_key": None}
    assert "once_key" not in result.labels  # carried once, in the options label


class CountingBroker(InMemoryBroker):
    kicks = 0

    async def kick(self, message: BrokerMessage) -> None:
        self.kicks += 1
        await super().kick(message)


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        ({"once_kye": "x"}, "once_kye"),
        ({"once_ttl": -5}, "once_ttl"),
        ({"once_mode": "bogus"}, "once_mode"),
        ({"once_raise": "yes"}, "once_raise"),
        ({"pool_max_size": 2}, "pool_key"),  # a companion without its key
        ({"pool_key": "p", "pool_max_size": 1, "pool_on_full": print}, "pool_on_full"),  # cannot travel
        ({"cache_key": "c-{nope}"}, "nope"),
    ],
)
async def test_a_bad_override_raises_at_kiq_and_sends_nothing(
    cachify: Cachify, labels: dict[str, Any], named: str
) -> None:
    broker = CountingBroker(max_stored_results=-1).with_middlewares(CachifyMiddleware(cachify=cachify))
    probe = Probe()
    task = declare(broker, "async", probe, once_key="order-{i}")
    await broker.startup()
    try:
        with pytest.raises(CachifyTaskOptionError) as caught:
            await task.kicker().with_labels(**labels).kiq(1)
        assert task.task_name in str(caught.value)
        assert named in str(caught.value)
        assert broker.kicks == 0
        # No claim was left behind: the same key is sent and runs.
        handle = await task.kiq(1)
        assert (await result_of(handle)).return_value == 10
        assert (broker.kicks, probe.runs) == (1, 1)
    finally:
        await broker.wait_all()
        await broker.shutdown()


async def test_once_raise_override_makes_a_duplicate_raise(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = _holding(Probe())
    task = declare(broker, kind, probe, once_key="order-{i}")
    await broker.startup()

    holder = await task.kiq(0)
    with pytest.raises(CachifyDuplicateError) as caught:
        await task.kicker().with_labels(once_raise=True).kiq(0)
    assert caught.value.holder_id == holder.task_id
    assert (await task.kiq(0)).task_id == holder.task_id  # declared behaviour is unchanged
    probe.hold.set()
    assert (await result_of(holder)).return_value == 0
    assert probe.runs == 1


async def test_cache_ttl_override_is_applied_by_the_worker(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = Probe()
    task = declare(broker, kind, probe, cache_key="square-{i}")  # declared: no expiry
    await broker.startup()

    await result_of(await task.kicker().with_labels(cache_ttl=0.2).kiq(3))
    await result_of(await task.kiq(3))  # a hit
    assert probe.runs == 1
    await asyncio.sleep(0.3)
    await result_of(await task.kiq(3))  # the entry the override stored has expired
    assert probe.runs == 2
    await asyncio.sleep(0.3)
    await result_of(await task.kiq(3))  # stored with the declared (no) expiry this time
    assert probe.runs == 2


async def test_an_override_equal_to_the_declaration_is_none(
    make_broker: Callable[..., InMemoryBroker],
) -> None:
    broker = make_broker()
    probe = Probe()
    task = declare(broker, "async", probe, once_key="order-{i}", once_ttl=60)
    await broker.startup()

    result = await result_of(await task.kicker().with_labels(once_ttl=60, retry_on_error=False).kiq(1))
    assert result.return_value == 10
    assert OPTIONS_LABEL not in result.labels


async def test_overrides_can_turn_a_feature_on_for_one_message(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = _holding(Probe())
    task = declare(broker, kind, probe)  # no option declared
    await broker.startup()

    holder = await task.kicker().with_labels(once_key="job-{i}").kiq(0)
    await eventually(lambda: _true(probe.now == 1), 5, "the holder started")
    assert (await task.kicker().with_labels(once_key="job-{i}").kiq(0)).task_id == holder.task_id
    other = await task.kiq(0)  # without the override: no dedup
    assert other.task_id != holder.task_id
    probe.hold.set()
    assert (await result_of(holder)).return_value == 0
    assert (await result_of(other)).return_value == 0
    assert probe.runs == 2
