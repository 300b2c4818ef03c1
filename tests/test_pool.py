"""``pool`` and ``@pooled``: at most ``max_size`` holders per key, on every backend.

Waits are bounded by ``WAIT_S``; the only timing assertions are the generous wake-up bounds
(``HANDOVER_S``) that a poll of ``lock_poll_interval=5`` could never meet.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from cachify_core import Cachify, CachifyPoolFullError, init_cachify, lock, pool, pooled

from .conftest import ALL_BACKENDS, WITH_CLIENT
from .support import WAIT_S, crowd_tasks, crowd_threads, started, wait_until

#: A waiter woken by a release must get its slot within this many seconds of it.
HANDOVER_S = 2.0
SLOW_POLL_S = 5
EXPIRED = "had expired before its holder released it"


@pytest.fixture(params=WITH_CLIENT)
def backend(request: pytest.FixtureRequest) -> str:
    """Pools run on the custom-client backend too (see conftest)."""
    return str(request.param)


def leftover_state(c: Cachify, backend: str) -> list[Any]:
    """What the backend still keeps for this instance's locks and pools."""
    if backend == "memory":
        store: Any = c.sync_backend
        return [*store._pools, *store._locks]
    client: Any = c.sync_backend.client  # type: ignore[attr-defined]
    if backend == "client":  # the slots; a size record lives on with the slots' lifetime
        keys = client._client.redis.keys(f"*{c.prefix}*")
        return [k for k in keys if not k.endswith(b":size")]
    return list(client.keys(f"*{c.prefix}*"))


# -- capacity -------------------------------------------------------------------------------------
def test_full_pool_raises_sync(cachify: Cachify) -> None:
    p = cachify.pool("x", max_size=2)
    assert p.size() == 0
    with p:
        assert p.size() == 1
        with pool("x", max_size=2):
            assert p.size() == 2
            with pytest.raises(CachifyPoolFullError, match=r"^x is full \(max_size=2\)$"), pool("x", 2):
                pass
            assert p.size() == 2  # the refused entry took nothing
            with cachify.pool("y", max_size=2):  # other keys, other pools
                assert p.size() == 2
        assert p.size() == 1
    assert p.size() == 0


async def test_full_pool_raises_async(cachify: Cachify) -> None:
    p = pool("x", max_size=2)
    assert await p.asize() == 0
    async with p:
        assert await p.asize() == 1
        async with cachify.pool("x", max_size=2):
            assert await p.asize() == 2
            with pytest.raises(CachifyPoolFullError, match=r"^x is full \(max_size=2\)$"):
                async with cachify.pool("x", 2):
                    pass
            assert await p.asize() == 2
        assert await p.asize() == 1
    assert await p.asize() == 0


def test_sync_and_async_share_the_pool(cachify: Cachify) -> None:
    async def sizes() -> tuple[int, bool]:
        p = cachify.pool("both", 1)
        try:
            async with p:
                return await p.asize(), False
        except CachifyPoolFullError:
            return await p.asize(), True

    with cachify.pool("both", 1):
        assert asyncio.run(sizes()) == (1, True)
    assert asyncio.run(sizes()) == (1, False)


def test_slot_freed_on_exception_sync(cachify: Cachify) -> None:
    p = cachify.pool("exc", 1)
    sizes: list[int] = []

    def fail_inside() -> None:
        with p:
            sizes.append(p.size())
            raise ValueError

    with pytest.raises(ValueError):
        fail_inside()
    assert sizes == [1]
    assert p.size() == 0
    with p:
        pass


async def test_slot_freed_on_exception_async(cachify: Cachify) -> None:
    p = cachify.pool("exc", 1)
    sizes: list[int] = []

    async def fail_inside() -> None:
        async with p:
            sizes.append(await p.asize())
            raise ValueError

    with pytest.raises(ValueError):
        await fail_inside()
    assert sizes == [1]
    assert await p.asize() == 0
    async with p:
        pass


def test_nested_entries_of_one_object_take_and_free_two_slots_sync(
    cachify: Cachify, warnings_log: pytest.LogCaptureFixture
) -> None:
    p = cachify.pool("n", 2)
    with p:
        with p:
            assert p.size() == 2
            with pytest.raises(CachifyPoolFullError), p:
                pass
            assert p.size() == 2
        assert p.size() == 1
    assert p.size() == 0
    assert warnings_log.records == []


async def test_nested_entries_of_one_object_take_and_free_two_slots_async(
    cachify: Cachify, warnings_log: pytest.LogCaptureFixture
) -> None:
    p = pool("n", 2)
    async with p:
        async with p:
            assert await p.asize() == 2
            with pytest.raises(CachifyPoolFullError):
                async with p:
                    pass
            assert await p.asize() == 2
        assert await p.asize() == 1
    assert await p.asize() == 0
    assert warnings_log.records == []


def test_repeated_use_of_one_object_leaks_nothing(cachify: Cachify, backend: str) -> None:
    p = cachify.pool("again", 1)
    for _ in range(200):
        with p:
            pass
    assert p.size() == 0
    assert leftover_state(cachify, backend) == []


# -- slot expiry ----------------------------------------------------------------------------------
def test_slot_exp_frees_a_crashed_holders_slot_sync(
    cachify: Cachify, warnings_log: pytest.LogCaptureFixture
) -> None:
    crashed = cachify.pool("c", 1, slot_exp=0.3)
    crashed.__enter__()  # the holder "crashes": no exit
    with pytest.raises(CachifyPoolFullError), cachify.pool("c", 1):
        pass
    start = time.monotonic()
    with cachify.pool("c", 1, timeout=WAIT_S) as p:  # waits out the crashed slot's lease
        assert time.monotonic() - start >= 0.2
        assert p.size() == 1
        crashed.__exit__(None, None, None)  # a late exit frees nothing of the new holder's
        assert p.size() == 1
    assert p.size() == 0
    assert len([r for r in warnings_log.records if EXPIRED in r.getMessage()]) == 1


def test_slot_exp_frees_a_slot_taken_through_the_backend(cachify: Cachify) -> None:
    full_key = f"{cachify.prefix}dead-pool"
    assert cachify.sync_backend.pool_acquire(full_key, "elsewhere:1:ffff:0", 2, 300, False)
    assert cachify.sync_backend.pool_acquire(full_key, "elsewhere:1:ffff:1", 2, None, False)
    p = cachify.pool("dead", 2)
    assert p.size() == 2
    with pytest.raises(CachifyPoolFullError), p:
        pass
    wait_until(lambda: p.size() == 1)
    with p:
        assert p.size() == 2
    assert p.size() == 1  # the slot without expiry stays


async def test_default_pool_slot_expiration_frees_a_crashed_holders_slot_async(
    make_cachify: Callable[..., Cachify],
) -> None:
    c = make_cachify(default_pool_slot_expiration=0.3, lock_poll_interval=0.05)
    crashed = c.pool("c", 1)
    await crashed.__aenter__()
    with pytest.raises(CachifyPoolFullError):
        async with c.pool("c", 1):
            pass
    async with c.pool("c", 1, timeout=WAIT_S) as p:
        assert await p.asize() == 1
    assert await p.asize() == 0


def test_redis_pool_set_expires_with_its_last_lease(flushed_redis_url: str) -> None:
    """Once a slot without expiry is given back, the set lives only as long as its other leases."""
    c = init_cachify(url=flushed_redis_url, prefix="T-abandoned-", is_global=False)
    client: Any = c.sync_backend.client  # type: ignore[attr-defined]
    crashed = c.pool("p", 2, slot_exp=0.3)
    crashed.__enter__()  # the holder "crashes": no exit
    with c.pool("p", 2, slot_exp=None):  # a holder without expiry comes and goes
        pass
    wait_until(lambda: c.pool("p", 2).size() == 0)
    wait_until(lambda: client.keys("*T-abandoned-*") == [], timeout_s=3)


# -- waiting ----------------------------------------------------------------------------------------
def test_timeout_exhausted_raises_full_sync(cachify: Cachify) -> None:
    with cachify.pool("t", 1):
        start = time.monotonic()
        with (
            pytest.raises(CachifyPoolFullError, match=r"^t is full \(max_size=1\)$"),
            pool("t", 1, timeout=0.3),
        ):
            pass
        assert time.monotonic() - start >= 0.25
        assert cachify.pool("t", 1).size() == 1


async def test_timeout_exhausted_raises_full_async(cachify: Cachify) -> None:
    async with cachify.pool("t", 1):
        start = time.monotonic()
        with pytest.raises(CachifyPoolFullError, match=r"^t is full \(max_size=1\)$"):
            async with pool("t", 1, timeout=0.3):
                pass
        assert time.monotonic() - start >= 0.25


@pytest.mark.parametrize("backend", ALL_BACKENDS)  # a custom client only polls: no wake-ups
def test_waiter_woken_by_release_sync(make_cachify: Callable[..., Cachify]) -> None:
    c = make_cachify(lock_poll_interval=SLOW_POLL_S)
    acquired_at: list[float] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        with c.pool("h", 2, timeout=10):
            acquired_at.append(time.monotonic())

    with c.pool("h", 2), c.pool("h", 2):
        worker = started(waiter)
        assert waiting.wait(WAIT_S)
        time.sleep(0.3)  # the waiter found the pool full and sleeps on its 5 s poll
        assert acquired_at == []
        released_at = time.monotonic()
    worker.finish(15)
    assert acquired_at[0] - released_at < HANDOVER_S
    assert c.pool("h", 2).size() == 0


@pytest.mark.parametrize("backend", ALL_BACKENDS)  # a custom client only polls: no wake-ups
async def test_waiter_woken_by_release_async(make_cachify: Callable[..., Cachify]) -> None:
    c = make_cachify(lock_poll_interval=SLOW_POLL_S)
    acquired_at: list[float] = []

    async def waiter() -> None:
        async with c.pool("h", 1, timeout=10):
            acquired_at.append(time.monotonic())

    async with c.pool("h", 1):
        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.3)
        assert not task.done()
        released_at = time.monotonic()
    await asyncio.wait_for(task, 15)
    assert acquired_at[0] - released_at < HANDOVER_S


@pytest.mark.parametrize("backend", ALL_BACKENDS)  # a custom client only polls: no wake-ups
async def test_several_waiters_all_get_a_slot_async(make_cachify: Callable[..., Cachify]) -> None:
    c = make_cachify(lock_poll_interval=SLOW_POLL_S)
    got: list[int] = []

    async def waiter(n: int) -> None:
        async with c.pool("many", 2, timeout=10):
            got.append(n)
            await asyncio.sleep(0.01)

    async with c.pool("many", 2), c.pool("many", 2):
        tasks = [asyncio.create_task(waiter(n)) for n in range(4)]
        await asyncio.sleep(0.3)
        assert got == []
        released_at = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*tasks), 15)
    assert sorted(got) == [0, 1, 2, 3]
    assert time.monotonic() - released_at < HANDOVER_S * 2


# -- never more than max_size -------------------------------------------------------------------------
def test_threads_never_exceed_max_size(cachify: Cachify) -> None:
    p = cachify.pool("hammer", 3, timeout=WAIT_S * 2)
    stats = crowd_threads(p, threads=8, rounds=15)
    assert stats["active"] == 0
    assert stats["done"] == 8 * 15
    assert 1 <= stats["peak"] <= 3
    assert p.size() == 0


async def test_tasks_never_exceed_max_size(cachify: Cachify) -> None:
    p = pool("hammer", 3, timeout=WAIT_S * 2)
    stats = await crowd_tasks(p, tasks=8, rounds=15)
    assert stats == {"active": 0, "peak": 3, "done": 8 * 15}
    assert await p.asize() == 0


def test_threads_without_waiting_never_exceed_max_size(cachify: Cachify) -> None:
    mutex = threading.Lock()
    stats = {"active": 0, "peak": 0, "ran": 0, "full": 0}

    def on_full(n: int) -> str:
        with mutex:
            stats["full"] += 1
        return "full"

    @pooled(key="burst", max_size=3, on_full=on_full)
    def burst(n: int) -> str:
        with mutex:
            stats["active"] += 1
            stats["peak"] = max(stats["peak"], stats["active"])
        time.sleep(0.002)
        with mutex:
            stats["active"] -= 1
            stats["ran"] += 1
        return "ran"

    def work() -> None:
        for n in range(20):
            assert burst(n) in ("ran", "full")

    workers = [started(work) for _ in range(8)]
    for worker in workers:
        worker.finish(WAIT_S * 4)
    assert stats["ran"] + stats["full"] == 8 * 20
    assert stats["ran"] >= 1
    assert 1 <= stats["peak"] <= 3
    assert burst.size(0) == 0


# -- @pooled ------------------------------------------------------------------------------------------
def test_pooled_on_full_gets_the_calls_arguments_sync(cachify: Cachify) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def handle_full(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append((args, kwargs))
        return {"user_id": args[0], "status": "queued"}

    @pooled(key="worker-pool-{user_id}", max_size=1, on_full=handle_full)
    def process_task(user_id: str, task_data: str) -> dict[str, Any]:
        if task_data == "outer":
            return {
                "same user": process_task(user_id, task_data="inner"),
                "other user": process_task("u2", "inner"),
                "size": process_task.size(user_id, "any"),
            }
        return {"user_id": user_id, "status": "completed"}

    assert process_task("u1", "outer") == {
        "same user": {"user_id": "u1", "status": "queued"},
        "other user": {"user_id": "u2", "status": "completed"},
        "size": 1,
    }
    assert calls == [(("u1",), {"task_data": "inner"})]
    assert process_task.size("u1", "any") == 0
    assert not inspect.iscoroutinefunction(process_task.size)


async def test_pooled_async_on_full_is_awaited(cachify: Cachify) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def handle_full(*args: Any, **kwargs: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        calls.append((args, kwargs))
        return {"user_id": kwargs["user_id"], "status": "queued"}

    @cachify.pooled(key="worker-pool-{user_id}", max_size=1, on_full=handle_full)
    async def process_task(user_id: str, task_data: str) -> dict[str, Any]:
        if task_data == "outer":
            return {
                "inner": await process_task(user_id=user_id, task_data="inner"),
                "size": await process_task.size(user_id=user_id, task_data="any"),
            }
        return {"user_id": user_id, "status": "completed"}

    assert await process_task(user_id="123", task_data="outer") == {
        "inner": {"user_id": "123", "status": "queued"},
        "size": 1,
    }
    assert calls == [((), {"user_id": "123", "task_data": "inner"})]
    assert await process_task.size("123", "any") == 0
    assert inspect.iscoroutinefunction(process_task.size)


async def test_pooled_async_with_sync_on_full(cachify: Cachify) -> None:
    @pooled(key="mixed", max_size=1, on_full=lambda n: f"full-{n}")
    async def mixed(n: int) -> str:
        return await mixed(n + 1) if n == 0 else f"ran-{n}"

    assert await mixed(0) == "full-1"


def test_pooled_raise_on_full_and_default_none_sync(cachify: Cachify) -> None:
    @pooled(key="strict-pool", max_size=1, raise_on_full=True)
    def strict() -> str:
        with pytest.raises(CachifyPoolFullError, match=r"^strict-pool-pool is full \(max_size=1\)$"):
            strict()
        return "ran"

    @pooled(key="lenient-pool", max_size=1)
    def lenient(depth: int) -> str | None:
        return lenient(depth + 1) if depth == 0 else "ran"

    assert strict() == "ran"
    assert lenient(0) is None
    assert strict.size() == 0
    assert lenient.size(0) == 0


async def test_pooled_raise_on_full_and_default_none_async(cachify: Cachify) -> None:
    gate = asyncio.Event()

    @pooled(key="strict-{n}", max_size=2, raise_on_full=True)
    async def strict(n: int) -> int:
        await asyncio.wait_for(gate.wait(), WAIT_S)
        return n

    @pooled(key="lenient", max_size=1)
    async def lenient(depth: int) -> str | None:
        return await lenient(depth + 1) if depth == 0 else "ran"

    running = [asyncio.create_task(strict(1)) for _ in range(2)]
    for _ in range(int(WAIT_S / 0.01)):
        if await strict.size(1) == 2:
            break
        await asyncio.sleep(0.01)
    assert await strict.size(1) == 2
    assert await strict.size(2) == 0
    with pytest.raises(CachifyPoolFullError, match=r"^strict-1-pool is full \(max_size=2\)$"):
        await strict(1)
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*running), WAIT_S) == [1, 1]
    assert await strict.size(1) == 0
    assert await lenient(0) is None


def test_pooled_frees_its_slot_on_exception(cachify: Cachify) -> None:
    @pooled(key="fails-{n}", max_size=1, raise_on_full=True)
    def fails(n: int) -> None:
        raise ValueError(n)

    for _ in range(3):
        with pytest.raises(ValueError):
            fails(1)
    assert fails.size(1) == 0


def test_instance_pooled_uses_its_instance(cachify: Cachify, make_cachify: Callable[..., Cachify]) -> None:
    a = make_cachify(prefix=f"A{cachify.prefix}")
    seen: dict[str, int] = {}

    @a.pooled(key="inst", max_size=1)
    def inst() -> str:
        seen["instance"] = a.pool("inst", 1).size()
        seen["global"] = cachify.pool("inst", 1).size()
        return "ran"

    with cachify.pool("inst", 1):  # the global's pool being full does not matter
        assert inst() == "ran"
    assert seen == {"instance": 1, "global": 1}


def test_pooled_repeated_calls_leak_nothing_sync(cachify: Cachify, backend: str) -> None:
    @pooled(key="rep-{n}", max_size=2)
    def rep(n: int) -> int:
        return n

    for i in range(1000):
        assert rep(i % 3) == i % 3
    assert [rep.size(n) for n in range(3)] == [0, 0, 0]
    assert leftover_state(cachify, backend) == []


async def test_pooled_repeated_calls_leak_nothing_async(cachify: Cachify, backend: str) -> None:
    @cachify.pooled(key="rep-{n}", max_size=2)
    async def rep(n: int) -> int:
        return n

    for i in range(1000):
        assert await rep(i % 3) == i % 3
    assert [await rep.size(n) for n in range(3)] == [0, 0, 0]
    assert leftover_state(cachify, backend) == []


# -- keys -------------------------------------------------------------------------------------------
def test_pool_keys_never_collide_with_lock_keys(cachify: Cachify) -> None:
    with cachify.lock("x-pool"), cachify.lock("x"):
        with cachify.pool("x", max_size=1) as p:
            assert p.size() == 1
            assert lock("x-pool").is_locked()
        assert p.size() == 0
        assert lock("x-pool").is_locked()
        assert lock("x").is_locked()
    with pool("x", max_size=1) as p:
        with lock("x-pool"), lock("x"), lock("x-pool-lock"):
            assert p.size() == 1
        assert p.size() == 1
    assert p.size() == 0


async def test_pooled_keys_never_collide_with_lock_keys_async(cachify: Cachify) -> None:
    @pooled(key="x", max_size=1, raise_on_full=True)
    async def guarded() -> bool:
        return await lock("x-pool").is_alocked()

    async with cachify.lock("x-pool"), cachify.lock("x"):
        assert await guarded() is True
    assert await guarded.size() == 0


# -- pool(...).pooled(): py-cachify's decorator method ------------------------------------------
def test_pool_method_pooled_shares_the_pool_with_with_blocks_sync(cachify: Cachify) -> None:
    worker_pool = pool(key="worker", max_size=2)
    seen: list[int] = []

    @worker_pool.pooled(on_full=lambda x: f"full {x}")
    def task(x: int) -> int | str:
        seen.append(worker_pool.size())
        return x * 10

    assert task(5) == 50
    with worker_pool:  # one slot taken by a block on the same object ...
        assert task(6) == 60
        with cachify.pool("worker", max_size=2):  # ... and one by another object on the key
            assert task(7) == "full 7"
            assert task.size() == 2
    assert seen == [1, 2]
    assert task.size() == 0
    assert not inspect.iscoroutinefunction(task.size)


async def test_pool_method_pooled_async_awaits_on_full(cachify: Cachify) -> None:
    worker_pool = cachify.pool("aworker", max_size=1)
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def handle_full(*args: Any, **kwargs: Any) -> str:
        await asyncio.sleep(0)
        calls.append((args, kwargs))
        return "full"

    @worker_pool.pooled(on_full=handle_full)
    async def task(x: int, *, depth: int = 0) -> str:
        if depth == 0:
            inner = await task(x + 1, depth=1)
            return f"ran {x}, inner {inner}, size {await task.size()}"
        return f"ran {x}"

    assert await task(1) == "ran 1, inner full, size 1"
    assert calls == [((2,), {"depth": 1})]
    assert await task.size() == 0
    assert await worker_pool.asize() == 0
    assert inspect.iscoroutinefunction(task.size)


def test_pool_method_pooled_functions_share_one_pool(cachify: Cachify) -> None:
    shared = pool("shared", max_size=1)

    @shared.pooled(raise_on_full=True)
    def outer() -> str:
        return inner()

    @shared.pooled()
    def inner() -> str:
        return "inner ran"

    with pytest.raises(CachifyPoolFullError, match=r"^shared is full \(max_size=1\)$"), shared:
        outer()
    assert outer() is None  # inner found the one slot taken by outer: no on_full, so None
    assert inner() == "inner ran"
    assert shared.size() == 0


async def test_pool_method_pooled_raise_on_full_async(cachify: Cachify) -> None:
    gate = asyncio.Event()
    shared = pool("strict", max_size=2)

    @shared.pooled(raise_on_full=True)
    async def strict(n: int) -> int:
        await asyncio.wait_for(gate.wait(), WAIT_S)
        return n

    running = [asyncio.create_task(strict(n)) for n in range(2)]
    for _ in range(int(WAIT_S / 0.01)):
        if await shared.asize() == 2:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(CachifyPoolFullError, match=r"^strict is full \(max_size=2\)$"):
        await strict(9)  # another argument, the same pool: the key is not a template
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*running), WAIT_S) == [0, 1]
    assert await strict.size() == 0


def test_pool_method_pooled_uses_the_pools_instance(
    cachify: Cachify, make_cachify: Callable[..., Cachify]
) -> None:
    other = make_cachify(prefix=f"B{cachify.prefix}")
    theirs = other.pool("inst", 1)

    @theirs.pooled(on_full=lambda: "full")
    def run() -> str:
        return f"{other.pool('inst', 1).size()} {cachify.pool('inst', 1).size()}"

    with cachify.pool("inst", 1):  # the global instance's pool being full does not matter
        assert run() == "1 1"
    with theirs:
        assert run() == "full"


def test_pool_method_pooled_waits_for_the_pools_timeout(cachify: Cachify) -> None:
    patient = pool("patient", max_size=1, timeout=WAIT_S)
    holding = threading.Event()
    hold_s = 1.0  # how long the holder keeps the slot after the pool was seen full

    def holder() -> None:
        with patient:
            holding.set()
            time.sleep(hold_s)

    @patient.pooled(raise_on_full=True)
    def run() -> str:
        return "ran"

    @pool("patient", max_size=1).pooled(on_full=lambda: "full")  # the same key, no timeout
    def impatient() -> str:
        return "ran"

    worker = started(holder)
    assert holding.wait(WAIT_S)
    assert impatient() == "full"  # the slot is taken: a call without a timeout does not wait
    assert run() == "ran"  # this one waits for the holder's release instead of raising
    worker.finish()
    assert run.size() == 0


def test_pool_method_pooled_lets_a_body_pool_full_error_propagate(cachify: Cachify) -> None:
    other = pool("other", max_size=1)
    outer = pool("outer", max_size=1)

    @outer.pooled(on_full=lambda: "outer full")
    def body() -> str:
        with other:  # full: this error is the body's, not the outer pool's verdict
            return "ran"

    with other, pytest.raises(CachifyPoolFullError, match=r"^other is full"):
        body()
    assert body() == "ran"
    assert outer.size() == 0


def test_pool_method_pooled_rejects_a_non_callable_on_full(cachify: Cachify) -> None:
    with pytest.raises(TypeError, match="'p': on_full must be callable, got str"):
        pool("p", 1).pooled(on_full="full")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["redis", "client"])  # memory: one store per instance
def test_size_counts_slots_held_by_another_process(make_cachify: Callable[..., Cachify]) -> None:
    holder = make_cachify(prefix="shared-")
    counter = make_cachify(prefix="shared-")  # its own backend: it never used the pool itself
    with holder.pool("busy", max_size=3), holder.pool("busy", max_size=3):
        assert counter.pool("busy", max_size=3).size() == 2
        assert asyncio.run(counter.pool("busy", max_size=3).asize()) == 2
    assert counter.pool("busy", max_size=3).size() == 0
