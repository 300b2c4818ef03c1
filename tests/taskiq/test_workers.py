"""Real ``taskiq worker`` processes (2) over RedisStreamBroker and RedisAsyncResultBackend.

Runs and concurrency are observed from outside the workers: the tasks of
:mod:`tests.taskiq.worker_app` write what they do to Redis (``obs:*`` keys), which the test reads.
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

from .conftest import Workers, eventually

pytestmark = pytest.mark.timeout(90)


def obs(app: ModuleType) -> Any:
    return aredis.Redis.from_url(app.db_url(0))


async def ints(client: Any, key: str) -> list[int]:
    return [int(v) for v in await client.lrange(key, 0, -1)]


async def test_200_duplicate_kicks_run_once_and_share_the_holders_result(app: ModuleType) -> None:
    r = obs(app)
    try:
        handles = [await app.dedup.kiq(7) for _ in range(200)]
        assert len({h.task_id for h in handles}) == 1  # every duplicate got the holder's handle
        results = await asyncio.gather(
            *(h.wait_result(check_interval=0.05, timeout=20) for h in handles[::20])
        )
        assert {res.return_value for res in results} == {70}
        assert int(await r.get("obs:dedup:runs")) == 1

        # The hold ended with the run: the same key runs again, under a new id.
        again = await app.dedup.kiq(7)
        assert again.task_id != handles[0].task_id
        assert (await again.wait_result(check_interval=0.05, timeout=20)).return_value == 70
        assert int(await r.get("obs:dedup:runs")) == 2
    finally:
        await r.aclose()


async def pool_run(app: ModuleType, task: Any, count: int, prefix: str, pool_key: str, cap: int) -> None:
    """Kick ``count`` tasks of a pool of ``cap``; check each ran once, never more than ``cap`` at once."""
    r = obs(app)
    stream = aredis.Redis.from_url(app.db_url(1))
    try:
        handles = [await task.kiq(i) for i in range(count)]

        async def all_ran() -> bool:
            return int(await r.llen(f"obs:{prefix}:ran")) >= count

        await eventually(all_ran, 60, f"{count} tasks ran")
        ran = sorted(await ints(r, f"obs:{prefix}:ran"))
        assert ran == list(range(count))  # each exactly once, none lost
        seen = await ints(r, f"obs:{prefix}:seen")
        assert len(seen) == count
        assert max(seen) <= cap

        # Every requeue kept its task id: each handle gets its own task's result.
        results = await asyncio.gather(*(h.wait_result(check_interval=0.05, timeout=20) for h in handles))
        assert [res.return_value for res in results] == list(range(count))

        # Every delivery, requeued ones included, ends acknowledged; every slot is back.
        async def all_acked() -> bool:
            return int((await stream.xpending(app.QUEUE, "taskiq"))["pending"]) == 0

        await eventually(all_acked, 10, "all deliveries acknowledged")
        assert await app.cachify.async_backend.pool_size(f"{app.PREFIX}{pool_key}-pool") == 0
    finally:
        await r.aclose()
        await stream.aclose()


async def test_200_tasks_of_a_pool_of_3_each_run_once_never_more_than_3(app: ModuleType) -> None:
    await pool_run(app, app.pooled, 200, "pool", "pool", 3)


async def test_sync_tasks_of_a_pool_of_2(app: ModuleType) -> None:
    await pool_run(app, app.pooled_sync, 60, "spool", "pool-sync", 2)


async def test_a_cache_hit_is_stored_as_the_result_without_running(app: ModuleType) -> None:
    r = obs(app)
    try:
        first = await (await app.square.kiq(12)).wait_result(check_interval=0.05, timeout=20)
        second_handle = await app.square.kiq(12)
        second = await second_handle.wait_result(check_interval=0.05, timeout=20)
        assert (first.return_value, second.return_value) == (144, 144)
        assert not second.is_err
        assert int(await r.get("obs:cache:runs")) == 1
    finally:
        await r.aclose()


async def test_a_killed_workers_slot_is_reusable_within_pool_slot_ttl(
    app: ModuleType, workers: Workers
) -> None:
    """SIGKILL the worker process holding the only slot of a pool: its lease is no longer
    renewed, so the slot is free again within ``pool_slot_ttl`` and the next task runs."""
    r = obs(app)
    pool = f"{app.PREFIX}kill-pool"
    slots = app.cachify.async_backend
    try:
        await app.hold_slot.kiq("holder", 60.0)

        async def holder_started() -> bool:
            return int(await r.llen("obs:kill:started")) == 1

        await eventually(holder_started, 20, "the holder started")
        tag, _, pid = (await r.lindex("obs:kill:started", 0)).decode().partition(":")
        assert tag == "holder"
        # Longer than the slot's TTL: the running holder's lease is renewed.
        await asyncio.sleep(app.KILL_SLOT_TTL_S * 1.5)
        assert await slots.pool_size(pool) == 1

        os.kill(int(pid), signal.SIGKILL)
        killed_at = time.monotonic()

        async def slot_free() -> bool:
            return int(await slots.pool_size(pool)) == 0

        await eventually(slot_free, app.KILL_SLOT_TTL_S + 0.2, "the dead holder's slot expired")
        freed_s = time.monotonic() - killed_at

        # The slot is usable: a task of the same pool runs (after at most one more backoff).
        waiter = await app.hold_slot.kiq("waiter", 0.0)
        assert (await waiter.wait_result(check_interval=0.05, timeout=10)).return_value == "waiter"
        assert (await r.lindex("obs:kill:started", 1)).decode().startswith("waiter:")
        print(f"slot free {freed_s:.2f}s after the kill (pool_slot_ttl={app.KILL_SLOT_TTL_S}s)")
    finally:
        await r.aclose()
