"""``lock``: sync and async context manager, decorator, owner checks and hand-over by notification.

Every test runs on each backend of the ``cachify`` fixture (memory, redis) and on the custom-client
backend (see conftest), except those that need what only the first two promise. Waits are bounded by
``WAIT_S``; the only timing assertions are the generous hand-over bounds (``HANDOVER_S``) that
a poll of ``lock_poll_interval=5`` could never meet.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cachify_core import Cachify, CachifyLockError, CachifyLockNotOwnedError, init_cachify, lock

from .conftest import ALL_BACKENDS, WITH_CLIENT
from .support import WAIT_S, await_until, crowd_tasks, crowd_threads, lost_warnings, started, wait_until

#: A waiter woken by the release must get the lock within this many seconds of it; with
#: ``lock_poll_interval=5`` only a notification can make it.
HANDOVER_S = 2.0
#: Poll interval of the instances used to prove hand-over by notification.
SLOW_POLL_S = 5


@pytest.fixture(params=WITH_CLIENT)
def backend(request: pytest.FixtureRequest) -> str:
    """Locks run on the custom-client backend too (see conftest)."""
    return str(request.param)


# -- conflict, waiting, timeout ---------------------------------------------------------------
def test_conflict_raises_sync(cachify: Cachify) -> None:
    with cachify.lock("res"):
        with pytest.raises(CachifyLockError, match=r"^res is already locked!$"), lock("res"):
            pass
        with pytest.raises(CachifyLockError, match=r"^res is already locked!$"), cachify.lock("res"):
            pass
    with lock("res"):  # free again once the holder left
        pass


async def test_conflict_raises_async(cachify: Cachify) -> None:
    async with lock("res"):
        with pytest.raises(CachifyLockError, match=r"^res is already locked!$"):
            async with cachify.lock("res"):
                pass
        with pytest.raises(CachifyLockError, match=r"^res is already locked!$"):
            async with lock("res"):
                pass
    async with cachify.lock("res"):
        pass


def test_sync_and_async_share_the_lock(cachify: Cachify) -> None:
    async def try_async() -> None:
        async with cachify.lock("both"):
            pass

    with cachify.lock("both"), pytest.raises(CachifyLockError, match="both is already locked!"):
        asyncio.run(try_async())


def test_is_locked_sync(cachify: Cachify) -> None:
    lk = cachify.lock("state")
    assert lk.is_locked() is False
    with lk:
        assert lk.is_locked() is True
        assert lock("state").is_locked() is True
        assert lock("other").is_locked() is False
    assert lk.is_locked() is False


async def test_is_alocked_async(cachify: Cachify) -> None:
    lk = lock("state")
    assert await lk.is_alocked() is False
    async with lk:
        assert await lk.is_alocked() is True
        assert await cachify.lock("state").is_alocked() is True
        assert await cachify.lock("other").is_alocked() is False
    assert await lk.is_alocked() is False


def test_waiter_gets_lock_when_released_sync(cachify: Cachify) -> None:
    acquired_at: list[float] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        with lock("w", nowait=False, timeout=WAIT_S):
            acquired_at.append(time.monotonic())

    with cachify.lock("w"):
        worker = started(waiter)
        assert waiting.wait(WAIT_S)
        time.sleep(0.2)
        assert acquired_at == []
        released_at = time.monotonic()
    worker.finish()
    assert len(acquired_at) == 1
    assert acquired_at[0] >= released_at
    assert not cachify.lock("w").is_locked()


async def test_waiter_gets_lock_when_released_async(cachify: Cachify) -> None:
    acquired_at: list[float] = []

    async def waiter() -> None:
        async with lock("w", nowait=False, timeout=WAIT_S):
            acquired_at.append(time.monotonic())

    async with cachify.lock("w"):
        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.2)
        assert not task.done()
        released_at = time.monotonic()
    await asyncio.wait_for(task, WAIT_S * 2)
    assert len(acquired_at) == 1
    assert acquired_at[0] >= released_at
    assert not await cachify.lock("w").is_alocked()


def test_timeout_expires_sync(cachify: Cachify) -> None:
    with cachify.lock("t"):
        start = time.monotonic()
        with (
            pytest.raises(CachifyLockError, match=r"^t is already locked!$"),
            lock("t", nowait=False, timeout=0.3),
        ):
            pass
        assert time.monotonic() - start >= 0.25
        assert cachify.lock("t").is_locked()


async def test_timeout_expires_async(cachify: Cachify) -> None:
    async with cachify.lock("t"):
        start = time.monotonic()
        with pytest.raises(CachifyLockError, match=r"^t is already locked!$"):
            async with lock("t", nowait=False, timeout=0.3):
                pass
        assert time.monotonic() - start >= 0.25
        assert await cachify.lock("t").is_alocked()


def test_exp_lets_a_waiter_in_sync(cachify: Cachify, warnings_log: pytest.LogCaptureFixture) -> None:
    """The doc's example: a nested entry of the same object waits out the outer one's ``exp``."""
    example_lock = lock("example-lock", nowait=False, timeout=WAIT_S, exp=0.3)
    with example_lock:
        start = time.monotonic()
        with example_lock:
            assert time.monotonic() - start >= 0.2
            assert example_lock.is_locked()
        # the inner exit released its own acquisition, not the (expired) outer one's
        assert not example_lock.is_locked()
    assert not example_lock.is_locked()
    assert len(lost_warnings(warnings_log)) == 1


async def test_exp_lets_a_waiter_in_async(cachify: Cachify, warnings_log: pytest.LogCaptureFixture) -> None:
    example_lock = lock("example-lock", nowait=False, timeout=WAIT_S, exp=0.3)
    async with example_lock:
        start = time.monotonic()
        async with example_lock:
            assert time.monotonic() - start >= 0.2
            assert await example_lock.is_alocked()
        assert not await example_lock.is_alocked()
    assert not await example_lock.is_alocked()
    assert len(lost_warnings(warnings_log)) == 1


def test_exp_frees_an_abandoned_lock(cachify: Cachify) -> None:
    abandoned = cachify.lock("gone", exp=0.3)
    abandoned.__enter__()  # the holder "crashes": no exit
    with pytest.raises(CachifyLockError), cachify.lock("gone"):
        pass
    wait_until(lambda: not abandoned.is_locked())
    with cachify.lock("gone"):
        pass


# -- owner checks ------------------------------------------------------------------------------
def test_release_of_a_lock_not_held_raises_and_keeps_it_sync(cachify: Cachify) -> None:
    holder, other = cachify.lock("own"), lock("own")
    with holder:
        with pytest.raises(CachifyLockNotOwnedError, match="own is not held"):
            other.release()
        assert holder.is_locked()
        with pytest.raises(CachifyLockError):  # a CachifyLockError too
            other.release()
        assert holder.is_locked()
        # the same object, but from a thread that did not enter it
        with pytest.raises(CachifyLockNotOwnedError):
            started(holder.release).finish()
        assert holder.is_locked()
    assert not holder.is_locked()
    with pytest.raises(CachifyLockNotOwnedError):
        holder.release()
    assert issubclass(CachifyLockNotOwnedError, CachifyLockError)


async def test_arelease_of_a_lock_not_held_raises_and_keeps_it_async(cachify: Cachify) -> None:
    holder, other = cachify.lock("own"), lock("own")
    async with holder:
        with pytest.raises(CachifyLockNotOwnedError, match="own is not held"):
            await other.arelease()
        assert await holder.is_alocked()
        # the same object, but from a task that did not enter it
        with pytest.raises(CachifyLockNotOwnedError):
            await asyncio.create_task(holder.arelease())
        assert await holder.is_alocked()
    assert not await holder.is_alocked()
    with pytest.raises(CachifyLockNotOwnedError):
        await holder.arelease()


def test_release_by_the_holder_sync(cachify: Cachify, warnings_log: pytest.LogCaptureFixture) -> None:
    lk = cachify.lock("mine")
    with lk:
        lk.release()
        assert not lk.is_locked()
        with lock("mine"):  # someone else may take it now
            pass
        with pytest.raises(CachifyLockNotOwnedError):
            lk.release()
    assert not lk.is_locked()
    assert lost_warnings(warnings_log) == []


async def test_arelease_by_the_holder_async(cachify: Cachify, warnings_log: pytest.LogCaptureFixture) -> None:
    """The doc's ``arelease`` example: release inside the block, then acquire again."""
    example_lock = lock("example-lock", nowait=False, timeout=WAIT_S, exp=2)
    async with example_lock:
        await example_lock.arelease()
        assert await example_lock.is_alocked() is False
    async with example_lock:
        assert await example_lock.is_alocked() is True
    assert lost_warnings(warnings_log) == []


def test_expired_holder_does_not_delete_successor_sync(
    cachify: Cachify, warnings_log: pytest.LogCaptureFixture
) -> None:
    first, second = cachify.lock("succ", exp=0.3), cachify.lock("succ", exp=30)
    with first:
        wait_until(lambda: not first.is_locked())
        second.__enter__()
    assert second.is_locked(), "the expired holder's exit deleted its successor's lock"
    assert len(lost_warnings(warnings_log)) == 1
    assert "succ" in lost_warnings(warnings_log)[0]
    second.__exit__(None, None, None)
    assert not second.is_locked()


def test_expired_holder_release_raises_and_keeps_successor_sync(cachify: Cachify) -> None:
    first, second = lock("succ", exp=0.3), lock("succ", exp=30)
    first.__enter__()
    wait_until(lambda: not first.is_locked())
    with second:
        with pytest.raises(CachifyLockNotOwnedError):
            first.release()
        assert second.is_locked()
    assert not second.is_locked()


async def test_expired_holder_does_not_delete_successor_async(
    cachify: Cachify, warnings_log: pytest.LogCaptureFixture
) -> None:
    first, second = cachify.lock("succ", exp=0.3), cachify.lock("succ", exp=30)
    async with first:
        await await_until(lambda: _not(first.is_alocked()))
        await second.__aenter__()
    assert await second.is_alocked(), "the expired holder's exit deleted its successor's lock"
    assert len(lost_warnings(warnings_log)) == 1
    await second.__aexit__(None, None, None)
    assert not await second.is_alocked()


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_expired_holder_arelease_raises_and_keeps_successor_async(cachify: Cachify) -> None:
    first, second = lock("succ", exp=0.3), lock("succ", exp=30)
    await first.__aenter__()
    await await_until(lambda: _not(first.is_alocked()))
    async with second:
        with pytest.raises(CachifyLockNotOwnedError):
            await first.arelease()
        assert await second.is_alocked()
    assert not await second.is_alocked()


def test_force_release_deletes_whoever_holds_it_sync(
    cachify: Cachify, warnings_log: pytest.LogCaptureFixture
) -> None:
    holder = cachify.lock("force")
    with holder:
        assert lock("force").force_release() is True
        assert not holder.is_locked()
        with lock("force"):  # free for anyone
            pass
    assert len(lost_warnings(warnings_log)) == 1  # the holder's exit found nothing of its own
    assert lock("force").force_release() is False


async def test_force_release_deletes_whoever_holds_it_async(
    cachify: Cachify, warnings_log: pytest.LogCaptureFixture
) -> None:
    holder = lock("force")
    async with holder:
        assert await cachify.lock("force").aforce_release() is True
        assert not await holder.is_alocked()
        async with cachify.lock("force"):
            pass
    assert len(lost_warnings(warnings_log)) == 1
    assert await lock("force").aforce_release() is False


# -- one object, many threads / tasks -----------------------------------------------------------
def test_one_object_entered_by_many_threads(cachify: Cachify) -> None:
    lk = cachify.lock("shared", nowait=False, timeout=WAIT_S * 2)
    stats = crowd_threads(lk, threads=6, rounds=5)
    assert stats == {"active": 0, "peak": 1, "done": 30}
    assert not lk.is_locked()


async def test_one_object_entered_by_many_tasks(cachify: Cachify) -> None:
    lk = lock("shared", nowait=False, timeout=WAIT_S * 2)
    stats = await crowd_tasks(lk, tasks=6, rounds=5)
    assert stats == {"active": 0, "peak": 1, "done": 30}
    assert not await lk.is_alocked()


def test_one_object_expired_exit_in_one_thread_keeps_another_threads_hold(
    cachify: Cachify, warnings_log: pytest.LogCaptureFixture
) -> None:
    lk = cachify.lock("obj", nowait=False, timeout=WAIT_S, exp=1.0)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def a() -> None:
        with lk:
            a_in.set()
            assert b_in.wait(WAIT_S)  # B got in after A's hold expired
        a_out.set()

    def b() -> None:
        assert a_in.wait(WAIT_S)
        with lk:
            b_in.set()
            assert a_out.wait(WAIT_S)
            seen["held after A left"] = lk.is_locked()

    workers = [started(a), started(b)]
    for worker in workers:
        worker.finish()
    assert seen == {"held after A left": True}
    assert len(lost_warnings(warnings_log)) == 1
    assert not lk.is_locked()


async def test_one_object_expired_exit_in_one_task_keeps_another_tasks_hold(
    cachify: Cachify, warnings_log: pytest.LogCaptureFixture
) -> None:
    lk = lock("obj", nowait=False, timeout=WAIT_S, exp=1.0)
    a_in, b_in, a_out = asyncio.Event(), asyncio.Event(), asyncio.Event()
    seen: dict[str, bool] = {}

    async def a() -> None:
        async with lk:
            a_in.set()
            await asyncio.wait_for(b_in.wait(), WAIT_S)
        a_out.set()

    async def b() -> None:
        await asyncio.wait_for(a_in.wait(), WAIT_S)
        async with lk:
            b_in.set()
            await asyncio.wait_for(a_out.wait(), WAIT_S)
            seen["held after A left"] = await lk.is_alocked()

    await asyncio.wait_for(asyncio.gather(a(), b()), WAIT_S * 2)
    assert seen == {"held after A left": True}
    assert len(lost_warnings(warnings_log)) == 1
    assert not await lk.is_alocked()


def test_failed_nested_entry_leaves_the_outer_hold_alone_sync(
    cachify: Cachify, warnings_log: pytest.LogCaptureFixture
) -> None:
    lk = cachify.lock("nest")
    with lk:
        with pytest.raises(CachifyLockError), lk:
            pass
        assert lk.is_locked()
    assert not lk.is_locked()
    assert lost_warnings(warnings_log) == []


async def test_failed_nested_entry_leaves_the_outer_hold_alone_async(
    cachify: Cachify, warnings_log: pytest.LogCaptureFixture
) -> None:
    lk = lock("nest")
    async with lk:
        with pytest.raises(CachifyLockError):
            async with lk:
                pass
        assert await lk.is_alocked()
    assert not await lk.is_alocked()
    assert lost_warnings(warnings_log) == []


# -- hand-over by notification ------------------------------------------------------------------
@pytest.mark.parametrize("backend", ALL_BACKENDS)  # a custom client only polls: no wake-ups
def test_handover_by_notification_sync(make_cachify: Callable[..., Cachify]) -> None:
    c = make_cachify(lock_poll_interval=SLOW_POLL_S)
    acquired_at: list[float] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        with c.lock("h", nowait=False, timeout=10):
            acquired_at.append(time.monotonic())

    with c.lock("h"):
        worker = started(waiter)
        assert waiting.wait(WAIT_S)
        time.sleep(0.3)  # the waiter has failed its first try and sleeps on its 5 s poll
        assert acquired_at == []
        released_at = time.monotonic()
    worker.finish(15)
    assert acquired_at[0] - released_at < HANDOVER_S


@pytest.mark.parametrize("backend", ALL_BACKENDS)  # a custom client only polls: no wake-ups
async def test_handover_by_notification_async(make_cachify: Callable[..., Cachify]) -> None:
    c = make_cachify(lock_poll_interval=SLOW_POLL_S)
    acquired_at: list[float] = []

    async def waiter() -> None:
        async with c.lock("h", nowait=False, timeout=10):
            acquired_at.append(time.monotonic())

    async with c.lock("h"):
        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.3)
        assert not task.done()
        released_at = time.monotonic()
    await asyncio.wait_for(task, 15)
    assert acquired_at[0] - released_at < HANDOVER_S


@pytest.mark.parametrize("backend", ALL_BACKENDS)  # a custom client only polls: no wake-ups
def test_force_release_wakes_a_waiter_sync(make_cachify: Callable[..., Cachify]) -> None:
    c = make_cachify(lock_poll_interval=SLOW_POLL_S)
    acquired_at: list[float] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        with c.lock("fw", nowait=False, timeout=10):
            acquired_at.append(time.monotonic())

    abandoned = c.lock("fw", exp=None)
    abandoned.__enter__()
    worker = started(waiter)
    assert waiting.wait(WAIT_S)
    time.sleep(0.3)
    assert acquired_at == []
    released_at = time.monotonic()
    assert c.lock("fw").force_release() is True
    worker.finish(15)
    assert acquired_at[0] - released_at < HANDOVER_S


def user_redis_client(url: str, **options: Any) -> Any:
    """A client built the way users build theirs (``redis.Redis(...)``: redis-py's default
    5 s socket timeout, and retries of a read that times out), with ``options`` on top."""
    import redis
    from redis.connection import parse_url

    return redis.Redis(**parse_url(url), **options)


#: Longer than the 5 s a Redis waiter's "someone is waiting" mark lives without a retry.
LONG_HOLD_S = 6.0
#: A poll longer than redis-py's default 5 s socket timeout.
LONG_POLL_S = 10


@pytest.mark.parametrize(
    "client_options", [{}, {"socket_timeout": None}], ids=["default-client", "no-socket-timeout"]
)
def test_handover_after_a_long_hold_with_a_user_supplied_client_sync(
    flushed_redis_url: str, client_options: dict[str, Any]
) -> None:
    """A hold outliving the waiting mark, waited on with a poll longer than the socket timeout
    (or with no socket timeout at all): the release must still wake the waiter."""
    client = user_redis_client(flushed_redis_url, **client_options)
    c = init_cachify(sync_client=client, prefix="T-long-", lock_poll_interval=LONG_POLL_S, is_global=False)
    acquired_at: list[float] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        with c.lock("long", nowait=False, timeout=15):
            acquired_at.append(time.monotonic())

    with c.lock("long"):
        worker = started(waiter)
        assert waiting.wait(WAIT_S)
        time.sleep(LONG_HOLD_S)
        released_at = time.monotonic()
    worker.finish(10)
    assert acquired_at[0] - released_at < HANDOVER_S


async def test_handover_after_a_long_hold_with_a_user_supplied_client_async(flushed_redis_url: str) -> None:
    client = user_redis_client(flushed_redis_url)
    c = init_cachify(sync_client=client, prefix="T-long-", lock_poll_interval=LONG_POLL_S, is_global=False)
    acquired_at: list[float] = []

    async def waiter() -> None:
        async with c.lock("long", nowait=False, timeout=15):
            acquired_at.append(time.monotonic())

    async with c.lock("long"):
        task = asyncio.create_task(waiter())
        await asyncio.sleep(LONG_HOLD_S)
        released_at = time.monotonic()
    await asyncio.wait_for(task, 10)
    assert acquired_at[0] - released_at < HANDOVER_S


async def test_wait_timeout_is_not_stretched_by_a_long_poll(make_cachify: Callable[..., Cachify]) -> None:
    c = make_cachify(lock_poll_interval=SLOW_POLL_S)
    async with c.lock("slow"):
        start = time.monotonic()
        with pytest.raises(CachifyLockError):
            async with c.lock("slow", nowait=False, timeout=0.3):
                pass
        assert time.monotonic() - start < HANDOVER_S


# -- decorator ------------------------------------------------------------------------------------
async def test_decorator_async_dynamic_key(cachify: Cachify, warnings_log: pytest.LogCaptureFixture) -> None:
    """The doc's ``sleep_for`` example, with events instead of sleeps."""
    entered: list[int] = []

    @lock(key="sleep_for_lock-{arg}", nowait=True)
    async def sleep_for(arg: int, gate: asyncio.Event | None = None) -> int:
        entered.append(arg)
        if gate is not None:
            await asyncio.wait_for(gate.wait(), WAIT_S)
        return arg

    for name in ("is_locked", "release", "force_release"):
        assert inspect.iscoroutinefunction(getattr(sleep_for, name)), name

    gate3 = asyncio.Event()
    task3 = asyncio.create_task(sleep_for(3, gate3))
    await await_until(lambda: 3 in entered)
    assert await sleep_for.is_locked(3) is True
    assert await sleep_for.is_locked(arg=3) is True
    assert await sleep_for.is_locked(4) is False
    with pytest.raises(CachifyLockError, match=r"^sleep_for_lock-3-lock is already locked!$"):
        await sleep_for(3)
    assert await sleep_for(4) == 4  # other arguments, other lock
    gate3.set()
    assert await asyncio.wait_for(task3, WAIT_S) == 3
    assert await sleep_for.is_locked(3) is False

    # release(5) from this process frees a running call's hold
    gate5a, gate5b = asyncio.Event(), asyncio.Event()
    task5a = asyncio.create_task(sleep_for(5, gate5a))
    await await_until(lambda: 5 in entered)
    assert await sleep_for.is_locked(5) is True
    await sleep_for.release(5)
    assert await sleep_for.is_locked(5) is False
    with pytest.raises(CachifyLockNotOwnedError):
        await sleep_for.release(5)
    task5b = asyncio.create_task(sleep_for(5, gate5b))  # another call may take it now
    await await_until(lambda: entered.count(5) == 2)
    gate5a.set()
    assert await asyncio.wait_for(task5a, WAIT_S) == 5
    assert await sleep_for.is_locked(5) is True, "the released call's exit deleted the next call's hold"
    gate5b.set()
    assert await asyncio.wait_for(task5b, WAIT_S) == 5
    assert await sleep_for.is_locked(5) is False

    # force_release deletes a running call's hold; its exit then only warns
    gate7 = asyncio.Event()
    task7 = asyncio.create_task(sleep_for(7, gate7))
    await await_until(lambda: 7 in entered)
    assert await sleep_for.force_release(7) is True
    assert await sleep_for.is_locked(7) is False
    gate7.set()
    assert await asyncio.wait_for(task7, WAIT_S) == 7
    assert await sleep_for.force_release(7) is False
    assert len(lost_warnings(warnings_log)) == 1


def test_decorator_sync_dynamic_key(cachify: Cachify, warnings_log: pytest.LogCaptureFixture) -> None:
    entered: list[int] = []

    @lock(key="sleep_for_lock-{arg}")
    def sleep_for(arg: int, gate: threading.Event | None = None) -> int:
        entered.append(arg)
        if gate is not None:
            assert gate.wait(WAIT_S)
        return arg

    for name in ("is_locked", "release", "force_release"):
        assert not inspect.iscoroutinefunction(getattr(sleep_for, name)), name

    gate3 = threading.Event()
    call3 = started(lambda: sleep_for(3, gate3))
    wait_until(lambda: 3 in entered)
    assert sleep_for.is_locked(3) is True
    assert sleep_for.is_locked(arg=3) is True
    assert sleep_for.is_locked(4) is False
    with pytest.raises(CachifyLockError, match=r"^sleep_for_lock-3-lock is already locked!$"):
        sleep_for(3)
    assert sleep_for(4) == 4
    gate3.set()
    assert call3.finish() == 3
    assert sleep_for.is_locked(3) is False

    gate5a, gate5b = threading.Event(), threading.Event()
    call5a = started(lambda: sleep_for(5, gate5a))
    wait_until(lambda: 5 in entered)
    sleep_for.release(5)
    assert sleep_for.is_locked(5) is False
    with pytest.raises(CachifyLockNotOwnedError):
        sleep_for.release(5)
    call5b = started(lambda: sleep_for(5, gate5b))
    wait_until(lambda: entered.count(5) == 2)
    gate5a.set()
    assert call5a.finish() == 5
    assert sleep_for.is_locked(5) is True, "the released call's exit deleted the next call's hold"
    gate5b.set()
    assert call5b.finish() == 5
    assert sleep_for.is_locked(5) is False

    gate7 = threading.Event()
    call7 = started(lambda: sleep_for(7, gate7))
    wait_until(lambda: 7 in entered)
    assert sleep_for.force_release(7) is True
    assert sleep_for.is_locked(7) is False
    gate7.set()
    assert call7.finish() == 7
    assert sleep_for.force_release(7) is False
    assert len(lost_warnings(warnings_log)) == 1


def test_decorator_release_of_a_hold_owned_elsewhere_raises_sync(cachify: Cachify) -> None:
    @cachify.lock(key="job-{n}")
    def job(n: int) -> int:
        return n

    # a holder in another process: same key, a token this process never issued
    full_key = f"{cachify.prefix}job-9-lock"
    assert cachify.sync_backend.lock_acquire(full_key, "elsewhere:1:ffff:0", None, False)
    assert job.is_locked(9) is True
    with pytest.raises(CachifyLockNotOwnedError):
        job.release(9)
    assert job.is_locked(9) is True
    with pytest.raises(CachifyLockError, match=r"^job-9-lock is already locked!$"):
        job(9)
    assert job.force_release(9) is True
    assert job(9) == 9


async def test_decorator_release_of_a_hold_owned_elsewhere_raises_async(cachify: Cachify) -> None:
    @lock(key="job-{n}")
    async def job(n: int) -> int:
        return n

    full_key = f"{cachify.prefix}job-9-lock"
    assert await cachify.async_backend.lock_acquire(full_key, "elsewhere:1:ffff:0", None, False)
    with pytest.raises(CachifyLockNotOwnedError):
        await job.release(9)
    assert await job.is_locked(9) is True
    assert await job.force_release(9) is True
    assert await job(9) == 9


def test_decorator_waits_with_nowait_false(cachify: Cachify) -> None:
    mutex = threading.Lock()
    stats = {"active": 0, "peak": 0}

    @lock(key="serial-{n}", nowait=False, timeout=WAIT_S * 2)
    def serial(n: int) -> int:
        with mutex:
            stats["active"] += 1
            stats["peak"] = max(stats["peak"], stats["active"])
        time.sleep(0.01)
        with mutex:
            stats["active"] -= 1
        return n

    workers = [started(lambda: serial(1)) for _ in range(4)]
    assert [w.finish(WAIT_S * 3) for w in workers] == [1, 1, 1, 1]
    assert stats == {"active": 0, "peak": 1}
    assert serial.is_locked(1) is False


def test_decorator_releases_on_exception(cachify: Cachify) -> None:
    @lock(key="boom-{n}")
    def boom(n: int) -> None:
        assert boom.is_locked(n)
        raise ValueError(n)

    with pytest.raises(ValueError):
        boom(1)
    assert boom.is_locked(1) is False
    with pytest.raises(ValueError):
        boom(1)  # not "already locked"


# -- instances ------------------------------------------------------------------------------------
def test_instance_lock_decorator_uses_its_instance_sync(
    cachify: Cachify, make_cachify: Callable[..., Cachify]
) -> None:
    a, b = make_cachify(prefix=f"A{cachify.prefix}"), make_cachify(prefix=f"B{cachify.prefix}")
    seen: dict[str, bool] = {}

    @a.lock(key="job-{n}")
    def job(n: int) -> int:
        seen["a"] = a.lock(f"job-{n}").is_locked()
        seen["b"] = b.lock(f"job-{n}").is_locked()
        seen["global"] = lock(f"job-{n}").is_locked()
        seen["attached"] = job.is_locked(n)
        return n

    assert job(1) == 1
    assert seen == {"a": True, "b": False, "global": False, "attached": True}
    with cachify.lock("job-1"), b.lock("job-1"):  # others' holds do not block it
        assert job(1) == 1
    with a.lock("job-1"), pytest.raises(CachifyLockError, match="job-1-lock is already locked!"):
        job(1)


async def test_instance_lock_decorator_uses_its_instance_async(
    cachify: Cachify, make_cachify: Callable[..., Cachify]
) -> None:
    a = make_cachify(prefix=f"A{cachify.prefix}")
    seen: dict[str, bool] = {}

    @a.lock(key="job-{n}")
    async def job(n: int) -> int:
        seen["a"] = await a.lock(f"job-{n}").is_alocked()
        seen["global"] = await lock(f"job-{n}").is_alocked()
        seen["attached"] = await job.is_locked(n)
        return n

    assert await job(1) == 1
    assert seen == {"a": True, "global": False, "attached": True}
    async with cachify.lock("job-1"):
        assert await job(1) == 1


@pytest.mark.usefixtures("no_global")
def test_instance_lock_works_without_a_global_instance(make_cachify: Callable[..., Cachify]) -> None:
    c = make_cachify()

    @c.lock(key="solo-{n}")
    def solo(n: int) -> bool:
        return c.lock(f"solo-{n}").is_locked()

    assert solo(1) is True
    with c.lock("solo"):
        assert c.lock("solo").is_locked()
