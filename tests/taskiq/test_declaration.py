"""Options are validated when the task is declared (or when the middleware is added / the broker
starts), and keys bind to the same values on the sending side and in the worker."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from taskiq import InMemoryBroker

from cachify_core import Cachify
from cachify_core.tasks import CachifyTaskOptionError
from cachify_taskiq import CachifyMiddleware

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        ({"once_kye": "x"}, "once_kye"),
        ({"once_key": "x", "once_mode": "later"}, "once_mode"),
        ({"pool_key": "p"}, "pool_max_size"),
        ({"pool_key": "p", "pool_max_size": 0}, "pool_max_size"),
        ({"pool_key": "p", "pool_max_size": 2, "pool_on_full": "wait"}, "pool_on_full"),
        ({"pool_key": "p", "pool_max_size": 2, "pool_backoff": (5, 1)}, "pool_backoff"),
        ({"cache_key": "c-{missing}"}, "missing"),
        ({"cache_ttl": 5}, "cache_key"),
    ],
)
def test_a_bad_option_fails_when_the_task_is_declared(labels: dict[str, Any], named: str) -> None:
    broker = InMemoryBroker().with_middlewares(CachifyMiddleware())

    with pytest.raises(CachifyTaskOptionError) as caught:

        @broker.task("orders:sync", **labels)
        async def sync(order_id: int) -> None: ...

    assert "orders:sync" in str(caught.value)
    assert named in str(caught.value)
    assert "taskiq_original" not in str(caught.value)  # Taskiq's rename of the function stays hidden
    assert broker.find_task("orders:sync") is None


def test_a_key_template_error_names_the_function_as_written() -> None:
    broker = InMemoryBroker().with_middlewares(CachifyMiddleware())

    with pytest.raises(CachifyTaskOptionError) as caught:

        @broker.task("orders:sync", once_key="order-{order}")
        async def sync_order(order_id: int) -> None: ...

    message = str(caught.value)
    assert "sync_order names 'order'" in message
    assert "taskiq_original" not in message


def test_a_task_declared_before_the_middleware_fails_when_it_is_added() -> None:
    broker = InMemoryBroker()

    @broker.task("orders:sync", once_key="order-{order}")
    async def sync(order_id: int) -> None: ...

    with pytest.raises(CachifyTaskOptionError, match="orders:sync"):
        broker.with_middlewares(CachifyMiddleware())


def test_other_labels_are_left_alone() -> None:
    broker = InMemoryBroker().with_middlewares(CachifyMiddleware())

    @broker.task("t", retry_on_error=True, max_retries=2, timeout=5, once_key="k")
    async def t() -> None: ...

    assert broker.find_task("t") is not None


@dataclass
class Order:
    id: int
    region: str


async def test_keys_bind_to_the_values_the_worker_receives(cachify: Cachify) -> None:
    """An annotated dataclass travels as a dict and is cast back in the worker; a float parameter
    sent an int receives a float. Sending side and worker must still agree on the key, or the
    worker would hold another key and the claimed one would stay behind."""
    broker = InMemoryBroker(max_stored_results=-1).with_middlewares(CachifyMiddleware(cachify=cachify))
    gate = asyncio.Event()
    seen: list[Any] = []

    @broker.task("orders:sync", once_key="order-{order.region}-{order.id}-{amount}")
    async def sync(order: Order, amount: float) -> str:
        seen.append((order, amount))
        await gate.wait()
        return f"{order.region}-{order.id}"

    await broker.startup()
    try:
        first = await sync.kiq(Order(5, "eu"), 3)
        assert (await sync.kiq(Order(5, "eu"), 3.0)).task_id == first.task_id
        gate.set()
        assert (await first.wait_result(check_interval=0.01, timeout=5)).return_value == "eu-5"
        assert seen == [(Order(5, "eu"), 3.0)]
        # Released under the key the sender claimed: the next send is not a duplicate.
        again = await sync.kiq(Order(5, "eu"), 3)
        assert again.task_id != first.task_id
        assert (await again.wait_result(check_interval=0.01, timeout=5)).return_value == "eu-5"
    finally:
        await broker.shutdown()


def test_the_documented_setup_validates_at_declaration() -> None:
    from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

    broker = (
        RedisStreamBroker("redis://localhost:6379/1")
        .with_result_backend(RedisAsyncResultBackend("redis://localhost:6379/2"))
        .with_middlewares(CachifyMiddleware())
    )  # no I/O until startup

    @broker.task(once_key="sync-{order_id}", pool_key="erp", pool_max_size=4)
    async def sync_order(order_id: int) -> None: ...

    with pytest.raises(CachifyTaskOptionError, match="pool_max_size"):

        @broker.task(pool_key="erp")
        async def bad(order_id: int) -> None: ...


async def test_startup_warns_when_a_backoff_outlasts_the_streams_idle_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from taskiq_redis import RedisStreamBroker

    middleware = CachifyMiddleware()
    broker = RedisStreamBroker("redis://localhost:6379/1", idle_timeout=30_000).with_middlewares(middleware)

    @broker.task("slow-backoff", pool_key="p", pool_max_size=1, pool_backoff=(1, 60))
    async def slow() -> None: ...

    @broker.task("fast-backoff", pool_key="p", pool_max_size=1, pool_backoff=(1, 5))
    async def fast() -> None: ...

    caplog.set_level(logging.WARNING, logger="cachify.taskiq")
    await middleware.startup()  # no I/O: the broker itself is not started
    assert [r.getMessage().split(":")[1].strip() for r in caplog.records] == ["task slow-backoff"]


_pickling_broker = InMemoryBroker().with_middlewares(CachifyMiddleware())


@_pickling_broker.task("pickled", pool_key="p", pool_max_size=1)
def double(x: int) -> int:
    return 2 * x


def test_a_sync_tasks_function_pickles_for_taskiqs_process_pool() -> None:
    """``--use-process-pool`` pickles the function the receiver runs: cachify's wrapper too."""
    import pickle

    from cachify_taskiq.wrapper import SyncTaskFunction

    wrapped = double.original_func
    assert isinstance(wrapped, SyncTaskFunction)  # cachify's wrapper is installed
    assert pickle.loads(pickle.dumps(wrapped))(4) == 8
