"""Reclaiming a dead worker's deliveries on RedisStreamBroker (:mod:`cachify_taskiq.reclaim`),
with Taskiq's receiver (or the wrapped ``listen`` itself) in this process, over a real Redis.

A "dead worker" here is a consumer of the group that read entries (``XREADGROUP``) and never
acknowledges them; no message is sent after that, so only the reclaim can bring them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aredis
from taskiq import InMemoryBroker
from taskiq.acks import AckableMessage
from taskiq.api import run_receiver_task
from taskiq_redis import ListQueueBroker, RedisStreamBroker

from cachify_core import Cachify
from cachify_taskiq import CachifyMiddleware
from cachify_taskiq.reclaim import MAX_TICK_S, reclaimer_for

from .conftest import eventually

pytestmark = [pytest.mark.timeout(60), pytest.mark.parametrize("backend", ["redis"])]

GROUP = "taskiq"
IDLE_MS = 400
TICK_S = IDLE_MS / 2000


@pytest.fixture
async def queue(redis_base_url: str) -> AsyncIterator[str]:
    name = f"cachify-reclaim-{uuid.uuid4().hex[:8]}"
    yield name
    client = aredis.Redis.from_url(f"{redis_base_url}/1")
    try:
        await client.delete(name)
    finally:
        await client.aclose()


def stream_broker(redis_base_url: str, queue: str, cachify: Cachify, **options: Any) -> RedisStreamBroker:
    options.setdefault("idle_timeout", IDLE_MS)
    broker = RedisStreamBroker(f"{redis_base_url}/1", queue_name=queue, **options).with_middlewares(
        CachifyMiddleware(cachify=cachify)
    )
    broker.is_worker_process = True
    return broker


async def dead_worker_reads(client: Any, queue: str, count: int) -> list[bytes]:
    """Deliver ``count`` entries to a consumer that will never acknowledge them."""
    fetched = await client.xreadgroup(GROUP, "dead-worker", {queue: ">"}, count=count)
    ids = [entry_id for _, entries in fetched for entry_id, _ in entries]
    assert len(ids) == count
    return ids


async def pending(client: Any, queue: str) -> int:
    return int((await client.xpending(queue, GROUP))["pending"])


def test_only_stream_brokers_reclaim(cachify: Cachify) -> None:
    assert reclaimer_for(InMemoryBroker()) is None
    assert reclaimer_for(ListQueueBroker("redis://localhost:6379/1")) is None
    short = reclaimer_for(RedisStreamBroker("redis://localhost:6379/1", idle_timeout=2000))
    assert short is not None
    assert (short.tick_s, short.batch) == (1.0, 100)
    default = reclaimer_for(RedisStreamBroker("redis://localhost:6379/1", unacknowledged_batch_size=7))
    assert default is not None
    assert (default.tick_s, default.batch) == (MAX_TICK_S, 7)


async def test_a_bad_idle_timeout_is_refused_at_worker_startup(cachify: Cachify) -> None:
    broker = RedisStreamBroker("redis://localhost:6379/1", idle_timeout="60s")  # type: ignore[arg-type]
    broker.with_middlewares(CachifyMiddleware(cachify=cachify)).is_worker_process = True
    with pytest.raises(ValueError, match=r"idle_timeout='60s'.*positive int of milliseconds"):
        await broker.middlewares[0].startup()


async def test_a_dead_workers_task_runs_without_new_traffic_and_its_hold_is_released(
    cachify: Cachify, redis_base_url: str, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = stream_broker(redis_base_url, queue, cachify)
    runs: list[int] = []

    @broker.task(once_key="order-{n}")
    async def once(n: int) -> int:
        runs.append(n)
        return n

    client = aredis.Redis.from_url(f"{redis_base_url}/1")
    await broker.startup()
    receiver: asyncio.Task[None] | None = None
    try:
        handle = await once.kiq(1)
        (entry_id,) = await dead_worker_reads(client, queue, 1)
        hold = f"{cachify.prefix}order-1-once"
        assert await cachify.async_backend.lock_holder(hold) == handle.task_id
        # While it is pending at the dead worker, a duplicate is still refused (nothing sent).
        length = await client.xlen(queue)
        assert (await once.kiq(1)).task_id == handle.task_id
        assert await client.xlen(queue) == length

        caplog.set_level(logging.INFO, logger="cachify.taskiq")
        started = time.monotonic()
        receiver = asyncio.create_task(run_receiver_task(broker, max_async_tasks=4))
        await eventually(lambda: _ran(runs, 1), IDLE_MS / 1000 + TICK_S + 2, "the dead worker's task ran")
        took_s = time.monotonic() - started
        await eventually(lambda: _none_pending(client, queue), 2, "the reclaimed delivery was acknowledged")
        assert await cachify.async_backend.lock_holder(hold) is None  # released after it ran
        assert runs == [1]
        assert await client.xlen(queue) == length  # no message was sent to bring it back
        lines = [r.getMessage() for r in caplog.records if "reclaimed" in r.getMessage()]
        # One line per tick, naming what it took. A loaded machine can see a second tick take
        # the entry again from the receiver while its run and ack outlast IDLE_MS (the hold
        # kept that copy from running twice: runs == [1] above).
        assert lines, "no reclaim was logged"
        line = lines[0]
        assert entry_id.decode() in line
        assert "idle over 400 ms" in line
        print(f"reclaimed and ran {took_s:.2f}s after the receiver started (idle_timeout {IDLE_MS} ms)")
    finally:
        if receiver is not None:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
        await broker.shutdown()
        await client.aclose()


class Consumer:
    """One listen, read with a bounded wait; a pending read stays pending between calls (cancelling
    it would end the generator)."""

    def __init__(self, broker: RedisStreamBroker) -> None:
        self.listen = broker.listen()
        self.reading: asyncio.Future[Any] | None = None

    async def drain(self, quiet_s: float, most: int, ack: bool = False) -> list[bytes]:
        """Messages until none for ``quiet_s``, at most ``most``; acknowledged if ``ack``."""
        got: list[bytes] = []
        while len(got) < most:
            if self.reading is None:
                self.reading = asyncio.ensure_future(anext(self.listen))
            done, _ = await asyncio.wait({self.reading}, timeout=quiet_s)
            if not done:
                break
            message, self.reading = self.reading.result(), None
            assert isinstance(message, AckableMessage)
            got.append(bytes(message.data))
            if ack:
                await message.ack()
        return got

    async def close(self) -> None:
        if self.reading is not None:
            self.reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await self.reading
        await self.listen.aclose()


async def test_two_workers_reclaiming_at_once_share_the_entries_without_overlap(
    cachify: Cachify, redis_base_url: str, queue: str
) -> None:
    """Each tick claims at most ``unacknowledged_batch_size``; two listeners claiming the same
    dead entries at the same time never both get one."""
    count, batch, idle_ms = 12, 4, 1000
    tick_s = idle_ms / 2000
    brokers = [
        stream_broker(redis_base_url, queue, cachify, unacknowledged_batch_size=batch, idle_timeout=idle_ms)
        for _ in range(2)
    ]
    client = aredis.Redis.from_url(f"{redis_base_url}/1")
    for b in brokers:
        await b.startup()
    consumers: list[Consumer] = []
    try:
        for i in range(count):
            await client.xadd(queue, {b"data": f"entry-{i}".encode()})
        await dead_worker_reads(client, queue, count)
        await asyncio.sleep(idle_ms / 1000 + 0.05)
        consumers = [Consumer(b) for b in brokers]

        # The first tick of each, at once and at the same time: at most ``batch`` apiece.
        first = await asyncio.gather(*(c.drain(tick_s / 4, count) for c in consumers))
        assert all(0 < len(got) <= batch for got in first), first
        seen = [data for got in first for data in got]
        assert len(seen) == len(set(seen))
        # The rest at the next ticks.
        deadline = time.monotonic() + 4 * tick_s + 2
        while len(seen) < count:
            assert time.monotonic() < deadline, f"reclaimed only {len(seen)} of {count}"
            more = await asyncio.gather(*(c.drain(tick_s / 4, count) for c in consumers))
            seen += [data for got in more for data in got]
        assert sorted(seen) == sorted(f"entry-{i}".encode() for i in range(count))
        assert len(seen) == len(set(seen))  # no entry went to both
        # None acknowledged yet: all still pending, now at the live consumers.
        assert await pending(client, queue) == count
        rows = {_text(c["name"]): c["pending"] for c in await client.xinfo_consumers(queue, GROUP)}
        assert rows["dead-worker"] == 0
        assert sum(rows.values()) == count
    finally:
        for c in consumers:
            await c.close()
        for b in brokers:
            await b.shutdown()
        await client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def test_a_listen_without_dead_entries_only_reads(
    cachify: Cachify, redis_base_url: str, queue: str
) -> None:
    """Live traffic goes through as before while the ticks find nothing; a message read during a
    tick is not lost."""
    broker = stream_broker(redis_base_url, queue, cachify, xread_block=100)
    client = aredis.Redis.from_url(f"{redis_base_url}/1")
    await broker.startup()
    consumer = Consumer(broker)
    try:
        got = []
        for i in range(20):
            await client.xadd(queue, {b"data": f"live-{i}".encode()})
            got += await consumer.drain(2.0, 1, ack=True)
            await asyncio.sleep(TICK_S / 4)  # several ticks pass over the 20 messages
        assert got == [f"live-{i}".encode() for i in range(20)]
        assert await pending(client, queue) == 0
    finally:
        await consumer.close()
        await broker.shutdown()
        await client.aclose()


async def _ran(runs: list[int], n: int) -> bool:
    return len(runs) >= n


async def _none_pending(client: Any, queue: str) -> bool:
    return await pending(client, queue) == 0
