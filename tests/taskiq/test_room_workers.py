"""The waiting room with real ``taskiq worker`` processes (2) over RedisStreamBroker and a Redis
store (:mod:`tests.taskiq.room_app`): a full pool parks its deliveries in the store, every
release hands the slot to the oldest one and kicks it again at once (no backoff), and a killed
holder's slot moves the queue once its lease runs out (the workers' sweepers).

Runs and concurrency are observed from inside the tasks (``obs:*`` keys in Redis).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from types import ModuleType
from typing import Any

import pytest
import redis.asyncio as aredis

from cachify_core.backends.base import RoomStats
from cachify_taskiq import REQUEUES_LABEL

from .conftest import Workers, eventually

pytestmark = pytest.mark.timeout(60)

EMPTY_ROOM = RoomStats(0, 0.0, 0, 0, 0)
#: Seconds between two kicks of the 60-task test: 5 kicks per body of 50 ms, 2 of which run.
KICK_EVERY_S = 0.01


def obs(app: ModuleType) -> Any:
    return aredis.Redis.from_url(app.db_url(0))


async def ints(client: Any, key: str) -> list[int]:
    return [int(v) for v in await client.lrange(key, 0, -1)]


def inversions(order: list[int]) -> float:
    """The share of pairs out of order (0: FIFO, 0.5: random)."""
    pairs = len(order) * (len(order) - 1) // 2
    bad = sum(1 for a in range(len(order)) for b in range(a + 1, len(order)) if order[a] > order[b])
    return bad / pairs if pairs else 0.0


@pytest.mark.parametrize(
    ("task_name", "name", "pool_key"), [("in_room", "room", "room"), ("in_room_sync", "sroom", "room-sync")]
)
async def test_60_tasks_on_a_pool_of_2_park_and_each_run_once(
    room_app: ModuleType, room_workers: Workers, task_name: str, name: str, pool_key: str
) -> None:
    app, count = room_app, 60
    task = getattr(app, task_name)
    r = obs(app)
    stream = aredis.Redis.from_url(app.db_url(1))
    full_key = f"{app.PREFIX}{pool_key}-pool"
    try:
        sent_before = int(await stream.xlen(app.QUEUE))
        started_at = time.monotonic()
        handles = []
        for i in range(count):  # kicked faster than the pool runs them (2 per BODY_S), but spaced
            handles.append(await task.kiq(i))  # so that each is read before the next: FIFO is visible
            await asyncio.sleep(KICK_EVERY_S)

        async def all_ran() -> bool:
            return int(await r.llen(f"obs:{name}:ran")) >= count

        await eventually(all_ran, 40, f"{count} tasks ran")
        took_s = time.monotonic() - started_at
        assert sorted(await ints(r, f"obs:{name}:ran")) == list(range(count))  # each once, none lost
        started = await ints(r, f"obs:{name}:started")
        assert sorted(started) == list(range(count))  # no body started twice
        seen = await ints(r, f"obs:{name}:seen")
        assert max(seen) <= 2

        results = await asyncio.gather(*(h.wait_result(check_interval=0.05, timeout=20) for h in handles))
        assert [res.return_value for res in results] == list(range(count))  # same task ids
        requeues = [int(res.labels.get(REQUEUES_LABEL, 0)) for res in results]
        assert all("_retries" not in res.labels for res in results)  # retries untouched
        assert max(requeues) <= 1  # a parked task is kicked again once, by its hand-over
        parks = sum(requeues)
        assert parks > count // 2  # the pool was full most of the time
        # Nothing but one copy per park went through the stream: no backoff requeue.
        assert int(await stream.xlen(app.QUEUE)) - sent_before == count + parks
        assert "requeued (" not in room_workers.log()

        async def all_acked() -> bool:
            return int((await stream.xpending(app.QUEUE, "taskiq"))["pending"]) == 0

        await eventually(all_acked, 10, "all deliveries acknowledged")
        assert await app.cachify.async_backend.room_stats(full_key) == EMPTY_ROOM
        assert app.cachify.pool(pool_key, 2).waiting() == EMPTY_ROOM
        assert await app.cachify.async_backend.pool_size(full_key) == 0
        # FIFO by arrival, which the spaced kicks make (nearly) the kick order. (Kicked all at
        # once, the two workers' batches interleave: 0.05-0.3 of the pairs out of order.)
        out_of_order = inversions(started)
        assert out_of_order < 0.05
        print(
            f"{task_name}: {count} x {app.BODY_S}s on a pool of 2 in {took_s:.2f}s, {parks} parked, "
            f"{out_of_order:.3f} of start pairs out of kick order"
        )
    finally:
        await r.aclose()
        await stream.aclose()


async def test_a_killed_holder_moves_the_queue_once_its_slot_expires(
    room_app: ModuleType, room_workers: Workers
) -> None:
    """SIGKILL the worker running the only slot of a pool while 10 deliveries are parked: the
    slot's lease runs out (``pool_slot_ttl`` 3 s), a sweeper hands it to the oldest parked one,
    and the line drains; the killed delivery itself is reclaimed from the stream by a live
    worker, with no new message, and runs."""
    app, waiting = room_app, 10
    r = obs(app)
    stream = aredis.Redis.from_url(app.db_url(1))
    full_key = f"{app.PREFIX}kill-room-pool"
    backend = app.cachify.async_backend
    try:
        victim = await app.victim_or_waiter.kiq(0)

        async def victim_started() -> bool:
            return int(await r.llen("obs:kill:started")) == 1

        await eventually(victim_started, 20, "the victim started")
        tag, _, pid = (await r.lindex("obs:kill:started", 0)).decode().partition(":")
        assert tag == "0"
        handles = []
        for i in range(1, waiting + 1):
            handles.append(await app.victim_or_waiter.kiq(i))
            await asyncio.sleep(KICK_EVERY_S)

        async def all_parked() -> bool:
            return int((await backend.room_stats(full_key)).parked) == waiting

        await eventually(all_parked, 10, "the others parked")
        # Longer than the slot's TTL: the running victim's lease is renewed, nothing moves.
        await asyncio.sleep(app.KILL_SLOT_TTL_S * 1.2)
        assert (await backend.room_stats(full_key)).parked == waiting
        assert await r.llen("obs:kill:ran") == 0

        sent = int(await stream.xlen(app.QUEUE))
        os.kill(int(pid), signal.SIGKILL)
        killed_at = time.monotonic()

        async def first_waiter_ran() -> bool:
            return int(await r.llen("obs:kill:ran")) >= 1

        await eventually(first_waiter_ran, app.KILL_SLOT_TTL_S + 5, "the queue moved after the kill")
        moved_s = time.monotonic() - killed_at

        # The rest drains; then, with no message sent any more, the victim's delivery comes back:
        # a worker reclaims it once it has been idle ``idle_timeout`` (within one more tick).

        async def victim_ran() -> bool:
            return b"0" in await r.lrange("obs:kill:ran", 0, -1)

        victim_bound_s = app.IDLE_TIMEOUT_MS / 1000 + app.TICK_S + 3
        await eventually(victim_ran, victim_bound_s, "the killed delivery came back and ran")
        victim_s = time.monotonic() - killed_at

        async def all_ran() -> bool:
            return int(await r.llen("obs:kill:ran")) >= waiting + 1

        await eventually(all_ran, 30, "every waiter ran")
        ran = await ints(r, "obs:kill:ran")
        assert sorted(ran) == list(range(waiting + 1))  # each ran to the end exactly once
        assert inversions([i for i in ran if i]) < 0.05  # the line kept its order
        assert (await victim.wait_result(check_interval=0.05, timeout=10)).return_value == 0
        results = await asyncio.gather(*(h.wait_result(check_interval=0.05, timeout=10) for h in handles))
        assert [res.return_value for res in results] == list(range(1, waiting + 1))
        assert all("_retries" not in res.labels for res in results)

        async def drained() -> bool:
            return await backend.room_stats(full_key) == EMPTY_ROOM and await backend.pool_size(full_key) == 0

        await eventually(drained, 10, "the room drained and every slot came back")

        async def none_pending() -> bool:
            return int((await stream.xpending(app.QUEUE, "taskiq"))["pending"]) == 0

        await eventually(none_pending, 5, "nothing left pending in the stream")
        # Only the waiters' hand-overs went through the stream since the kill, and they were
        # done before the victim's delivery was idle long enough: cachify's reclaim brought it back.
        assert int(await stream.xlen(app.QUEUE)) - sent == waiting
        assert ran[-1] == 0
        assert "cachify: reclaimed 1 delivery(ies) idle over 12000 ms" in room_workers.log()
        print(
            f"queue moved {moved_s:.2f}s after the kill (pool_slot_ttl={app.KILL_SLOT_TTL_S}s); the killed "
            f"delivery ran {victim_s:.2f}s after it (idle_timeout={app.IDLE_TIMEOUT_MS} ms); ran {ran}"
        )
    finally:
        await r.aclose()
        await stream.aclose()
