"""A full pool over a real RedisStreamBroker, with Taskiq's receiver running in this process so
the stream can be inspected at each step.

- Parked in the waiting room (the default): the delivery is acknowledged at once and nothing
  is re-sent until a slot frees; then exactly one copy, reserving its entry, is in the stream.
- The backoff requeue (the fallback; here ``pool_max_waiting=0``): the requeued delivery stays
  unacknowledged (so a dying worker cannot lose it) until its re-send is in the stream, while
  the worker's capacity is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aredis
from taskiq.api import run_receiver_task
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from cachify_core import Cachify
from cachify_core.backends.base import RoomStats
from cachify_core.tasks import TaskPolicy
from cachify_taskiq import REQUEUES_LABEL, CachifyMiddleware
from cachify_taskiq.envelope import RESERVATION_LABEL
from cachify_taskiq.room import Publisher

from .conftest import eventually

pytestmark = [pytest.mark.timeout(60), pytest.mark.parametrize("backend", ["redis"])]

#: The requeue backoff, fixed here (the policy's is random) so the steps can be timed.
BACKOFF_S = 1.5
GROUP = "taskiq"


@dataclass
class Stream:
    broker: RedisStreamBroker
    queue: str
    redis: Any
    release_holder: asyncio.Event
    tasks: dict[str, Any]
    receiver: asyncio.Task[None] | None = None

    async def length(self) -> int:
        return int(await self.redis.xlen(self.queue))

    async def pending_ids(self) -> set[bytes]:
        rows = await self.redis.xpending_range(self.queue, GROUP, min="-", max="+", count=100)
        return {row["message_id"] for row in rows}

    async def entry_of(self, task_id: str) -> bytes:
        for entry_id, fields in await self.redis.xrange(self.queue):
            if task_id.encode() in fields[b"data"]:
                return bytes(entry_id)
        raise AssertionError(f"no stream entry for {task_id}")

    def start_worker(self, max_async_tasks: int) -> None:
        self.receiver = asyncio.create_task(run_receiver_task(self.broker, max_async_tasks=max_async_tasks))

    async def stop_worker(self) -> None:
        if self.receiver is not None:
            self.receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.receiver
            self.receiver = None


@pytest.fixture
async def stream(
    cachify: Cachify, redis_base_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stream]:
    monkeypatch.setattr(TaskPolicy, "backoff_s", lambda self, requeues: BACKOFF_S)
    queue = f"cachify-requeue-{uuid.uuid4().hex[:8]}"
    broker = (
        RedisStreamBroker(f"{redis_base_url}/1", queue_name=queue)
        .with_result_backend(RedisAsyncResultBackend(f"{redis_base_url}/2", prefix_str=queue))
        .with_middlewares(CachifyMiddleware(cachify=cachify))
    )
    release = asyncio.Event()

    @broker.task(pool_key="p", pool_max_size=1, pool_max_waiting=0)
    async def holder() -> str:
        await release.wait()
        return "holder"

    @broker.task(pool_key="p", pool_max_size=1, pool_max_waiting=0)
    async def waiter() -> str:
        return "waiter"

    @broker.task(pool_key="r", pool_max_size=1)
    async def room_holder() -> str:
        await release.wait()
        return "holder"

    @broker.task(pool_key="r", pool_max_size=1)
    async def room_waiter(n: int) -> int:
        return n

    @broker.task
    async def plain() -> str:
        return "plain"

    client = aredis.Redis.from_url(f"{redis_base_url}/1")
    broker.is_worker_process = True  # (as ``taskiq worker`` sets it): the sweeper starts
    await broker.startup()
    tasks = {"holder": holder, "waiter": waiter, "plain": plain}
    tasks.update(room_holder=room_holder, room_waiter=room_waiter)
    s = Stream(broker, queue, client, release, tasks)
    try:
        yield s
    finally:
        release.set()
        await s.stop_worker()
        with contextlib.suppress(Exception):
            await broker.shutdown()
        await client.delete(queue)
        await client.aclose()


async def test_a_requeue_is_sent_before_its_delivery_is_acknowledged(stream: Stream) -> None:
    stream.start_worker(max_async_tasks=2)
    holder = await stream.tasks["holder"].kiq()
    await eventually(lambda: _len_pending(stream, 1), 5, "the holder is running")

    waiter = await stream.tasks["waiter"].kiq()
    waiter_entry = await stream.entry_of(waiter.task_id)
    await eventually(lambda: _len_pending(stream, 2), 5, "the waiter was delivered")
    await asyncio.sleep(0.2)  # its run found the pool full and ended

    # The worker's capacity is free during the backoff: with 2 places and the holder in one,
    # another task runs now, well before the waiter's backoff is over.
    loop = asyncio.get_running_loop()
    started = loop.time()
    plain = await stream.tasks["plain"].kiq()
    assert (await plain.wait_result(check_interval=0.02, timeout=5)).return_value == "plain"
    assert loop.time() - started < BACKOFF_S / 2

    # Still in the backoff: no re-send yet, and the waiter's delivery is unacknowledged.
    assert await stream.length() == 3
    assert waiter_entry in await stream.pending_ids()

    # After the backoff: the re-send is in the stream, then the delivery is acknowledged.
    await eventually(lambda: _len_is(stream, 4), BACKOFF_S + 2, "the requeue was sent")
    await eventually(lambda: _not_pending(stream, waiter_entry), 2, "the first delivery was acknowledged")

    stream.release_holder.set()
    assert (await holder.wait_result(check_interval=0.02, timeout=5)).return_value == "holder"
    result = await waiter.wait_result(check_interval=0.02, timeout=BACKOFF_S * 3)
    assert result.return_value == "waiter"  # the same task id, requeued
    await eventually(lambda: _len_pending(stream, 0), 5, "every delivery acknowledged")


async def test_shutdown_sends_waiting_requeues_at_once(
    stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TaskPolicy, "backoff_s", lambda self, requeues: 60.0)
    stream.start_worker(max_async_tasks=4)
    await stream.tasks["holder"].kiq()
    await eventually(lambda: _len_pending(stream, 1), 5, "the holder is running")
    waiter = await stream.tasks["waiter"].kiq()
    waiter_entry = await stream.entry_of(waiter.task_id)
    await eventually(lambda: _len_pending(stream, 2), 5, "the waiter was delivered")
    await asyncio.sleep(0.2)
    assert await stream.length() == 2

    await stream.stop_worker()
    await stream.broker.shutdown()  # the middleware publishes the waiting requeue now
    assert await stream.length() == 3
    assert waiter_entry not in await stream.pending_ids()


# -- the waiting room -----------------------------------------------------------------------------
async def room(stream: Stream, cachify: Cachify) -> RoomStats:
    return await cachify.async_backend.room_stats(f"{cachify.prefix}r-pool")


async def test_a_parked_delivery_is_acknowledged_at_once_and_handed_over_when_the_slot_frees(
    stream: Stream, cachify: Cachify
) -> None:
    stream.start_worker(max_async_tasks=4)
    holder = await stream.tasks["room_holder"].kiq()
    await eventually(lambda: _len_pending(stream, 1), 5, "the holder is running")

    # A bytes label (base64 on the wire) travels through the payload as it was sent.
    # The second is sent once the first has parked: two deliveries received together are
    # admitted concurrently (max_async_tasks=4), and could park in either order.
    first = await stream.tasks["room_waiter"].kicker().with_labels(blob=b"raw").kiq(1)

    async def parked(n: int) -> bool:
        return (await room(stream, cachify)).parked == n

    await eventually(lambda: parked(1), 5, "the first waiter parked")
    second = await stream.tasks["room_waiter"].kiq(2)
    await eventually(lambda: parked(2), 5, "both waiters parked")
    # Parked: acknowledged at once (only the holder is pending), nothing re-sent, no timer.
    await eventually(lambda: _len_pending(stream, 1), 2, "the parked deliveries were acknowledged")
    await asyncio.sleep(0.5)
    assert await stream.length() == 3
    assert not await first.is_ready()  # no result stored for a parked delivery

    stream.release_holder.set()
    assert (await holder.wait_result(check_interval=0.02, timeout=5)).return_value == "holder"
    results = [await h.wait_result(check_interval=0.02, timeout=5) for h in (first, second)]
    assert [r.return_value for r in results] == [1, 2]  # same task ids as kicked
    for result in results:  # one hand-over each: requeues + 1, its entry reserved, no retry
        assert result.labels[REQUEUES_LABEL] == 1
        assert isinstance(result.labels[RESERVATION_LABEL], str)
        assert "_retries" not in result.labels
    # Exactly one copy per park, in the order they parked.
    entries = await stream.redis.xrange(stream.queue)
    assert len(entries) == 5
    copies = [fields[b"data"] for _, fields in entries[3:]]
    assert first.task_id.encode() in copies[0]
    assert second.task_id.encode() in copies[1]
    copy = stream.broker.formatter.loads(copies[0])
    copy.parse_labels()
    assert copy.labels["blob"] == b"raw"  # typed as it was sent

    await eventually(lambda: _len_pending(stream, 0), 5, "every delivery acknowledged")
    assert await room(stream, cachify) == RoomStats(0, 0.0, 0, 0, 0)
    assert await cachify.async_backend.pool_size(f"{cachify.prefix}r-pool") == 0


async def test_a_hand_over_whose_publish_failed_is_published_by_the_sweep(
    stream: Stream, cachify: Cachify, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_one = Publisher.publish_one
    failed: list[str] = []

    async def fail_once(self: Publisher, entry_id: str, body: bytes) -> None:
        if not failed:
            failed.append(entry_id)
            raise ConnectionError("broker away")
        await publish_one(self, entry_id, body)

    monkeypatch.setattr(Publisher, "publish_one", fail_once)
    stream.start_worker(max_async_tasks=4)
    holder = await stream.tasks["room_holder"].kiq()
    await eventually(lambda: _len_pending(stream, 1), 5, "the holder is running")
    waiter = await stream.tasks["room_waiter"].kiq(7)

    async def parked() -> bool:
        return (await room(stream, cachify)).parked == 1

    await eventually(parked, 5, "the waiter parked")
    stream.release_holder.set()
    await holder.wait_result(check_interval=0.02, timeout=5)
    assert failed  # the release's publish failed: the entry is handed over, nothing in the stream
    assert (await room(stream, cachify)).handed == 1
    assert await stream.length() == 2

    # The worker's sweep publishes it again once its hand-over lease (10 s) is over.
    result = await waiter.wait_result(check_interval=0.05, timeout=20)
    assert result.return_value == 7
    assert result.labels[RESERVATION_LABEL] == failed[0]
    assert await stream.length() == 3
    await eventually(lambda: _len_pending(stream, 0), 5, "every delivery acknowledged")
    assert await room(stream, cachify) == RoomStats(0, 0.0, 0, 0, 0)


async def _len_pending(stream: Stream, count: int) -> bool:
    return len(await stream.pending_ids()) == count


async def _len_is(stream: Stream, count: int) -> bool:
    return await stream.length() == count


async def _not_pending(stream: Stream, entry: bytes) -> bool:
    return entry not in await stream.pending_ids()
