"""Leases: ``extend``/``aextend``, ``owned``/``aowned``, owner-checked release, ``auto_renew``.

Every test runs on each backend of the ``cachify`` fixture (memory, redis), sync and async.
Lifetimes are read exactly where that is possible (Redis ``PTTL``; the memory backend under a
fake clock). ``auto_renew`` is about real time: a hold with a 1 s lease must survive
``WORK_S`` (2.5 s) of work, so those tests sleep, with generous bounds. The fault test kills
a real process (Redis only) and checks the lease ends within one TTL of the kill, after
having outlived its TTL several times while the holder lived.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from cachify_core import (
    Cachify,
    CachifyLockError,
    CachifyLockNotOwnedError,
    CachifyPoolFullError,
    MemoryStore,
    init_cachify,
    lock,
    once,
    pool,
    pooled,
)
from cachify_core import instance as instance_module
from cachify_core import leases as leases_module
from cachify_core.backends import memory as memory_module

from . import mp_workers_cache
from .support import (
    CTX,
    KINDS,
    WAIT_S,
    assert_crash_hold_freed_by_expiry,
    await_until,
    reaped,
    sigkill,
    start_all,
    started,
    wait_until,
)

#: The lease of every auto-renewed hold here, and how long the holder works (> 2 leases).
TTL_S = 1.0
WORK_S = 2.5
#: After a release, how long we watch for renewals that should not happen (> 2 intervals).
QUIET_S = 0.8
LOST = "was lost before its holder released it"


# -- helpers --------------------------------------------------------------------------------
class Clock:
    """Fake monotonic clock for the memory backend and the lease scheduler."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 10_000.0
        monkeypatch.setattr(memory_module, "_now", lambda: self.now)
        monkeypatch.setattr(leases_module, "_now", lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def remaining_s(c: Cachify, full_key: str) -> float | None:
    """Seconds lock ``full_key`` has left to live (``None``: absent)."""
    backend = c.sync_backend
    if isinstance(backend, MemoryStore):
        held = backend._locks.get(full_key)
        if held is None or held[1] <= memory_module._now():
            return None
        return held[1] - memory_module._now()
    pttl = backend.client.pttl("{" + full_key + "}")  # type: ignore[attr-defined]
    return None if pttl < 0 else pttl / 1000.0


def run_in_thread(fn: Callable[[], Any]) -> Any:
    return started(fn).finish(WAIT_S)


def spy(monkeypatch: pytest.MonkeyPatch, backend: Any, method: str) -> list[tuple[Any, ...]]:
    """Record every call of ``backend.<method>`` (sync or async) as its arguments."""
    calls: list[tuple[Any, ...]] = []
    original = getattr(backend, method)
    if inspect.iscoroutinefunction(original):

        async def arecord(*args: Any) -> Any:
            calls.append(args)
            return await original(*args)

        monkeypatch.setattr(backend, method, arecord)
    else:

        def record(*args: Any) -> Any:
            calls.append(args)
            return original(*args)

        monkeypatch.setattr(backend, method, record)
    return calls


def lost_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if LOST in r.getMessage()]


@pytest.fixture
def renewing(
    make_cachify: Callable[..., Cachify], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Cachify:
    """A global instance whose default lock lifetime (``@once``) is ``TTL_S``; warnings captured."""
    c = make_cachify(
        default_lock_expiration=TTL_S, default_pool_slot_expiration=TTL_S, lock_poll_interval=0.05
    )
    monkeypatch.setattr(instance_module, "_global", c)
    caplog.set_level(logging.WARNING, logger="cachify")
    return c


def renew_spy(monkeypatch: pytest.MonkeyPatch, c: Cachify, kind: str, method: str) -> list[tuple[Any, ...]]:
    return spy(monkeypatch, c.sync_backend if kind == "sync" else c.async_backend, method)


def work_sync(check: Callable[[], None] | None = None) -> None:
    """``WORK_S`` of blocking work in slices, running ``check`` between them."""
    for _ in range(5):
        time.sleep(WORK_S / 5)
        if check is not None:
            check()


async def work_async(check: Callable[[], Awaitable[None]] | None = None) -> None:
    for _ in range(5):
        await asyncio.sleep(WORK_S / 5)
        if check is not None:
            await check()


# -- extend ----------------------------------------------------------------------------------
def test_extend_grows_the_remaining_lifetime_sync(cachify: Cachify, clock: Clock) -> None:
    full = f"{cachify.prefix}ext-lock"
    lk = lock("ext", exp=1)
    with lk:
        before = remaining_s(cachify, full)
        assert before is not None
        assert 0 < before <= 1.0
        lk.extend(30)
        after = remaining_s(cachify, full)
        assert after is not None
        assert 20 < after <= 30, f"{after}s left after extend(30)"
        if isinstance(cachify.sync_backend, MemoryStore):
            clock.advance(10)  # well past the original 1 s
            assert lk.owned()
            clock.advance(25)  # past the extension
            assert not lk.owned()
            assert not lk.is_locked()


async def test_aextend_grows_the_remaining_lifetime_async(cachify: Cachify, clock: Clock) -> None:
    full = f"{cachify.prefix}ext-lock"
    lk = lock("ext", exp=1)
    async with lk:
        before = remaining_s(cachify, full)
        assert before is not None
        assert 0 < before <= 1.0
        await lk.aextend(30)
        after = remaining_s(cachify, full)
        assert after is not None
        assert 20 < after <= 30, f"{after}s left after aextend(30)"
        if isinstance(cachify.sync_backend, MemoryStore):
            clock.advance(10)
            assert await lk.aowned()
            clock.advance(25)
            assert not await lk.aowned()


def test_extend_of_a_hold_not_owned_raises_and_touches_nothing_sync(cachify: Cachify) -> None:
    full = f"{cachify.prefix}ext2-lock"
    holder, other = lock("ext2", exp=5), lock("ext2", exp=5)
    with pytest.raises(CachifyLockNotOwnedError):
        holder.extend(10)  # never entered
    with holder:
        with pytest.raises(CachifyLockNotOwnedError):
            other.extend(60)  # another object on the same key
        with pytest.raises(CachifyLockNotOwnedError):
            run_in_thread(lambda: holder.extend(60))  # the holder object, from another thread
        left = remaining_s(cachify, full)
        assert left is not None
        assert left <= 5


async def test_aextend_of_a_hold_not_owned_raises_and_touches_nothing_async(cachify: Cachify) -> None:
    full = f"{cachify.prefix}ext2-lock"
    holder, other = lock("ext2", exp=5), lock("ext2", exp=5)
    with pytest.raises(CachifyLockNotOwnedError):
        await holder.aextend(10)
    async with holder:
        with pytest.raises(CachifyLockNotOwnedError):
            await other.aextend(60)
        with pytest.raises(CachifyLockNotOwnedError):
            await asyncio.create_task(holder.aextend(60))  # the holder object, from another task
        left = remaining_s(cachify, full)
        assert left is not None
        assert left <= 5


def test_extend_after_expiry_raises_and_keeps_the_successor_sync(cachify: Cachify, clock: Clock) -> None:
    full = f"{cachify.prefix}ext3-lock"
    lk = lock("ext3", exp=0.3)
    lk.__enter__()
    try:
        if isinstance(cachify.sync_backend, MemoryStore):
            clock.advance(1)
        else:
            wait_until(lambda: not lk.is_locked())
        with lock("ext3", exp=5):
            successor = cachify.sync_backend.lock_holder(full)
            with pytest.raises(CachifyLockNotOwnedError):
                lk.extend(60)
            assert cachify.sync_backend.lock_holder(full) == successor
            left = remaining_s(cachify, full)
            assert left is not None
            assert left <= 5, "the old holder's extend renewed the successor's lock"
    finally:
        lk.__exit__(None, None, None)


def test_extend_with_no_lifetime_does_not_release_the_lock(cachify: Cachify) -> None:
    """``extend(None)``/``extend(inf)`` must either be refused or keep the lock, never drop it."""
    for seconds in (None, float("inf")):
        lk = lock(f"ext-none-{seconds}", exp=5)
        with lk:
            with contextlib.suppress(ValueError, TypeError):
                lk.extend(seconds)  # type: ignore[arg-type]
            assert lk.owned(), f"extend({seconds}) released the lock"


# -- owned -----------------------------------------------------------------------------------
def test_owned_sync(cachify: Cachify) -> None:
    lk = lock("own", exp=0.5)
    assert not lk.owned()
    with lk:
        assert lk.owned()
        assert run_in_thread(lk.owned) is False  # same object, another thread
        assert not lock("own").owned()  # another object on the same key
        wait_until(lambda: not lk.is_locked())  # expiry
        assert not lk.owned()
        with lock("own", exp=5) as successor:
            assert successor.owned()
            assert not lk.owned()  # the key is held again, but not by lk
    assert not lk.owned()


async def test_aowned_async(cachify: Cachify) -> None:
    lk = lock("own", exp=0.5)
    assert not await lk.aowned()
    async with lk:
        assert await lk.aowned()
        assert await asyncio.create_task(lk.aowned()) is False  # same object, another task
        assert not await lock("own").aowned()

        async def expired() -> bool:
            return not await lk.is_alocked()

        await await_until(expired)
        assert not await lk.aowned()
        async with lock("own", exp=5) as successor:
            assert await successor.aowned()
            assert not await lk.aowned()
    assert not await lk.aowned()


def test_owned_expires_on_the_fake_clock(clock: Clock) -> None:
    c = init_cachify(is_global=False, prefix="clock-")  # memory: Redis expiry is checked in real time above
    lk = c.lock("own-clock", exp=2)
    with lk:
        clock.advance(1.9)
        assert lk.owned()
        clock.advance(0.2)
        assert not lk.owned()


# -- release of a lock not held ----------------------------------------------------------------
def test_release_of_a_lock_held_by_another_raises_and_deletes_nothing_sync(cachify: Cachify) -> None:
    full = f"{cachify.prefix}rel-lock"
    holder, other = lock("rel"), lock("rel")
    with holder:
        token = cachify.sync_backend.lock_holder(full)
        assert token is not None
        with pytest.raises(CachifyLockNotOwnedError, match="rel is not held by this caller"):
            other.release()
        with pytest.raises(CachifyLockNotOwnedError):
            run_in_thread(holder.release)  # the holder object, from another thread
        assert cachify.sync_backend.lock_holder(full) == token
        assert holder.owned()
    # an expired hold whose key was taken again: its release leaves the successor alone
    stale = lock("rel", exp=0.3)
    stale.__enter__()
    wait_until(lambda: not stale.is_locked())
    with lock("rel", exp=5):
        successor = cachify.sync_backend.lock_holder(full)
        with pytest.raises(CachifyLockNotOwnedError, match="nothing was released"):
            stale.release()
        assert cachify.sync_backend.lock_holder(full) == successor
    assert issubclass(CachifyLockNotOwnedError, CachifyLockError)


async def test_arelease_of_a_lock_held_by_another_raises_and_deletes_nothing_async(cachify: Cachify) -> None:
    full = f"{cachify.prefix}rel-lock"
    holder, other = lock("rel"), lock("rel")
    async with holder:
        token = await cachify.async_backend.lock_holder(full)
        assert token is not None
        with pytest.raises(CachifyLockNotOwnedError, match="rel is not held by this caller"):
            await other.arelease()
        with pytest.raises(CachifyLockNotOwnedError):
            await asyncio.create_task(holder.arelease())
        assert await cachify.async_backend.lock_holder(full) == token
        assert await holder.aowned()
    stale = lock("rel", exp=0.3)
    await stale.__aenter__()

    async def expired() -> bool:
        return not await stale.is_alocked()

    await await_until(expired)
    async with lock("rel", exp=5):
        successor = await cachify.async_backend.lock_holder(full)
        with pytest.raises(CachifyLockNotOwnedError):
            await stale.arelease()
        assert await cachify.async_backend.lock_holder(full) == successor


# -- auto_renew --------------------------------------------------------------------------------
def test_lock_without_auto_renew_is_lost_during_long_work(renewing: Cachify) -> None:
    """The control: what ``auto_renew`` prevents (so the tests below can fail)."""
    lk = lock("plain", exp=TTL_S)
    with lk:
        time.sleep(TTL_S * 1.5)
        assert not lk.owned()
        assert not lk.is_locked()


def test_pool_without_auto_renew_is_lost_during_long_work(renewing: Cachify) -> None:
    p = pool("plain", 1, slot_exp=TTL_S)
    with p:
        time.sleep(TTL_S * 1.5)
        assert p.size() == 0


def test_lock_auto_renew_keeps_the_hold_sync(
    renewing: Cachify, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    renewals = renew_spy(monkeypatch, renewing, "sync", "lock_extend")
    lk = lock("renew", exp=TTL_S, auto_renew=True)

    def still_held() -> None:
        assert lk.owned(), "the auto-renewed lock was lost"

    with lk:
        work_sync(still_held)
        with pytest.raises(CachifyLockError), lock("renew"):
            pass
        left = remaining_s(renewing, f"{renewing.prefix}renew-lock")
        assert left is not None
        assert left <= TTL_S
    assert len(renewals) >= 3, f"only {len(renewals)} renewals in {WORK_S}s"
    assert not lk.is_locked()
    after_release = len(renewals)
    time.sleep(QUIET_S)
    assert len(renewals) == after_release, "renewal went on after the release"
    assert lost_warnings(caplog) == []


async def test_lock_auto_renew_keeps_the_hold_async(
    renewing: Cachify, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    renewals = renew_spy(monkeypatch, renewing, "async", "lock_extend")
    lk = lock("renew", exp=TTL_S, auto_renew=True)

    async def still_held() -> None:
        assert await lk.aowned(), "the auto-renewed lock was lost"

    async with lk:
        await work_async(still_held)
        with pytest.raises(CachifyLockError):
            async with lock("renew"):
                pass
    assert len(renewals) >= 3, f"only {len(renewals)} renewals in {WORK_S}s"
    assert not await lk.is_alocked()
    after_release = len(renewals)
    await asyncio.sleep(QUIET_S)
    assert len(renewals) == after_release, "renewal went on after the release"
    assert lost_warnings(caplog) == []


def test_explicit_release_stops_renewal_sync(
    renewing: Cachify, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    renewals = renew_spy(monkeypatch, renewing, "sync", "lock_extend")
    lk = lock("renew-rel", exp=TTL_S, auto_renew=True)
    lk.__enter__()
    time.sleep(TTL_S * 0.6)
    lk.release()
    assert not lk.is_locked()
    after_release = len(renewals)
    time.sleep(QUIET_S)
    assert len(renewals) == after_release
    assert lost_warnings(caplog) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_decorator_release_stops_renewal(
    renewing: Cachify, kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``job.release(n)`` from inside a running auto-renewed call ends the renewal too."""
    renewals = renew_spy(monkeypatch, renewing, kind, "lock_extend")
    if kind == "sync":

        @lock("drel-{n}", exp=TTL_S, auto_renew=True)
        def job(n: int) -> int:
            time.sleep(TTL_S * 0.6)
            job.release(n)
            assert not job.is_locked(n)
            settled = len(renewals)
            time.sleep(QUIET_S)
            return len(renewals) - settled

        assert await asyncio.to_thread(job, 1) == 0, "renewal went on after release()"
    else:

        @lock("drel-{n}", exp=TTL_S, auto_renew=True)
        async def ajob(n: int) -> int:
            await asyncio.sleep(TTL_S * 0.6)
            await ajob.release(n)
            assert not await ajob.is_locked(n)
            settled = len(renewals)
            await asyncio.sleep(QUIET_S)
            return len(renewals) - settled

        assert await ajob(1) == 0, "renewal went on after release()"
    assert lost_warnings(caplog) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_lock_decorator_auto_renew(
    renewing: Cachify, kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    renewals = renew_spy(monkeypatch, renewing, kind, "lock_extend")
    inside: list[Any] = []
    if kind == "sync":

        @lock("dec-{n}", exp=TTL_S, auto_renew=True)
        def job(n: int, nested: bool = False) -> str:
            if nested:
                return "nested ran"
            work_sync()
            assert job.is_locked(n)
            with pytest.raises(CachifyLockError):
                job(n, nested=True)
            inside.append("checked")
            return "done"

        assert await asyncio.to_thread(job, 1) == "done"
        assert not job.is_locked(1)
    else:

        @lock("dec-{n}", exp=TTL_S, auto_renew=True)
        async def ajob(n: int, nested: bool = False) -> str:
            if nested:
                return "nested ran"
            await work_async()
            assert await ajob.is_locked(n)
            with pytest.raises(CachifyLockError):
                await ajob(n, nested=True)
            inside.append("checked")
            return "done"

        assert await ajob(1) == "done"
        assert not await ajob.is_locked(1)
    assert inside == ["checked"]
    assert len(renewals) >= 3
    assert lost_warnings(caplog) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_once_auto_renew(
    renewing: Cachify, kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``@once`` holds for ``default_lock_expiration`` (here ``TTL_S``): renewed past it."""
    renewals = renew_spy(monkeypatch, renewing, kind, "lock_extend")
    inside: list[Any] = []
    if kind == "sync":

        @once("once-{n}", return_on_locked="LOCKED", auto_renew=True)
        def job(n: int, nested: bool = False) -> str:
            if nested:
                return "nested ran"
            work_sync()
            inside.append(job(n, nested=True))  # still held: the overlapping call is skipped
            return "done"

        assert await asyncio.to_thread(job, 1) == "done"
        assert not job.is_locked(1)
    else:

        @once("once-{n}", return_on_locked="LOCKED", auto_renew=True)
        async def ajob(n: int, nested: bool = False) -> str:
            if nested:
                return "nested ran"
            await work_async()
            inside.append(await ajob(n, nested=True))
            return "done"

        assert await ajob(1) == "done"
        assert not await ajob.is_locked(1)
    assert inside == ["LOCKED"]
    assert len(renewals) >= 3
    assert lost_warnings(caplog) == []


def test_once_without_auto_renew_is_lost_during_long_work(renewing: Cachify) -> None:
    """The control for ``test_once_auto_renew``."""
    inside: list[Any] = []

    @once("once-plain", return_on_locked="LOCKED")
    def job(nested: bool = False) -> str:
        if nested:
            return "nested ran"
        time.sleep(TTL_S * 1.5)
        inside.append(job(nested=True))
        return "done"

    assert job() == "done"
    assert inside == ["nested ran"]


def test_pool_auto_renew_keeps_the_slot_sync(
    renewing: Cachify, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    renewals = renew_spy(monkeypatch, renewing, "sync", "pool_extend")
    p = pool("renew", 1, slot_exp=TTL_S, auto_renew=True)

    def still_held() -> None:
        assert p.size() == 1, "the auto-renewed slot was lost"

    with p:
        work_sync(still_held)
        with pytest.raises(CachifyPoolFullError), pool("renew", 1):
            pass
    assert p.size() == 0
    assert len(renewals) >= 3
    after_release = len(renewals)
    time.sleep(QUIET_S)
    assert len(renewals) == after_release, "renewal went on after the release"
    assert lost_warnings(caplog) == []


async def test_pool_auto_renew_keeps_the_slot_async(
    renewing: Cachify, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    renewals = renew_spy(monkeypatch, renewing, "async", "pool_extend")
    p = pool("renew", 1, slot_exp=TTL_S, auto_renew=True)

    async def still_held() -> None:
        assert await p.asize() == 1, "the auto-renewed slot was lost"

    async with p:
        await work_async(still_held)
        with pytest.raises(CachifyPoolFullError):
            async with pool("renew", 1):
                pass
    assert await p.asize() == 0
    assert len(renewals) >= 3
    after_release = len(renewals)
    await asyncio.sleep(QUIET_S)
    assert len(renewals) == after_release, "renewal went on after the release"
    assert lost_warnings(caplog) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_pooled_auto_renew(
    renewing: Cachify, kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    renewals = renew_spy(monkeypatch, renewing, kind, "pool_extend")
    inside: list[Any] = []
    if kind == "sync":

        @pooled(
            "pooled-{n}", max_size=1, on_full=lambda n, nested=False: "FULL", slot_exp=TTL_S, auto_renew=True
        )
        def job(n: int, nested: bool = False) -> str:
            if nested:
                return "nested ran"
            work_sync()
            inside.append((job.size(n), job(n, nested=True)))
            return "done"

        assert await asyncio.to_thread(job, 1) == "done"
        assert job.size(1) == 0
    else:

        @pooled(
            "pooled-{n}", max_size=1, on_full=lambda n, nested=False: "FULL", slot_exp=TTL_S, auto_renew=True
        )
        async def ajob(n: int, nested: bool = False) -> str:
            if nested:
                return "nested ran"
            await work_async()
            inside.append((await ajob.size(n), await ajob(n, nested=True)))
            return "done"

        assert await ajob(1) == "done"
        assert await ajob.size(1) == 0
    assert inside == [(1, "FULL")]
    assert len(renewals) >= 3
    assert lost_warnings(caplog) == []


async def test_many_async_holders_are_renewed_by_one_timer_and_a_stalled_renewal_holds_none_back(
    renewing: Cachify, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """60 locks and 60 pool slots held at once on one loop, past two TTLs: every one is kept,
    no task runs per held lease (only a due renewal has one), the first lock's renewals stall
    for 0.4 TTL each without costing anyone else theirs, and once released nothing renews."""
    backend = renewing.async_backend
    lock_extend, pool_extend = backend.lock_extend, backend.pool_extend
    stalled: list[str] = []
    renewals: list[str] = []

    async def slow_lock_extend(key: str, token: str, ttl_ms: int) -> bool:
        renewals.append(key)
        if key.endswith("many-0-lock"):
            stalled.append(key)
            await asyncio.sleep(TTL_S * 0.4)
        return await lock_extend(key, token, ttl_ms)

    async def counted_pool_extend(key: str, token: str, ttl_ms: int) -> bool:
        renewals.append(key)
        return await pool_extend(key, token, ttl_ms)

    monkeypatch.setattr(backend, "lock_extend", slow_lock_extend)
    monkeypatch.setattr(backend, "pool_extend", counted_pool_extend)
    tasks_before = len(asyncio.all_tasks())
    locks = [lock(f"many-{i}", exp=TTL_S, auto_renew=True) for i in range(60)]
    slots = [pool(f"many-{i}", 1, slot_exp=TTL_S, auto_renew=True) for i in range(60)]
    async with contextlib.AsyncExitStack() as held:
        for held_one in (*locks, *slots):
            await held.enter_async_context(held_one)
        assert len(asyncio.all_tasks()) - tasks_before < 10, "a task per held lease"
        await asyncio.sleep(TTL_S * 2.2)
        for i, lk in enumerate(locks):
            assert await lk.aowned(), f"lock {i} was lost"
        for i, p in enumerate(slots):
            assert await p.asize() == 1, f"slot {i} was lost"
    assert len(stalled) >= 2
    assert len(renewals) >= 120 * 3
    assert lost_warnings(caplog) == []
    await asyncio.sleep(0.05)  # a renewal in flight at the release finishes or is cancelled
    after_release = len(renewals)
    await asyncio.sleep(TTL_S * 0.6)
    assert len(renewals) == after_release, "renewal went on after the release"
    assert len(asyncio.all_tasks()) == tasks_before


async def test_an_async_lease_stopped_from_another_thread_stops_on_its_loop(
    renewing: Cachify, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hold taken on a loop and released from a thread: its renewals end, its bookkeeping is
    done on its loop (the heap is the loop's), and the other leases go on being renewed."""
    renewals = renew_spy(monkeypatch, renewing, "async", "lock_extend")
    kept = lock("kept", exp=TTL_S, auto_renew=True)
    async with kept:
        loop_thread = threading.get_ident()
        stopped_on: list[int] = []
        original = leases_module._LoopRenewals._stopped_one

        def recorded(self: Any) -> None:
            stopped_on.append(threading.get_ident())
            original(self)

        monkeypatch.setattr(leases_module._LoopRenewals, "_stopped_one", recorded)
        leases = [
            leases_module.start_async_renewal(renewing.async_backend, "lock", f"x-{i}", "t", 900)
            for i in range(80)
        ]
        stopper = threading.Thread(target=lambda: [lease.stop() for lease in leases])
        stopper.start()
        stopper.join(5)
        assert all(lease.stopped for lease in leases)
        await asyncio.sleep(0.05)
        assert stopped_on
        assert set(stopped_on) == {loop_thread}
        before = len(renewals)
        await asyncio.sleep(TTL_S * 1.2)
        renewed = [call[0] for call in renewals[before:]]
        assert renewed, "the lease still held was not renewed"
        assert not any(str(key).startswith("x-") for key in renewed), "a stopped lease renewed"
        assert await kept.aowned()


def test_a_renewal_runs_in_no_holders_context_and_closed_loops_are_let_go(
    renewing: Cachify, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timer that starts renewals carries a context of its own (not the holder's that
    armed it), and a loop that has closed is dropped once another loop starts a lease."""
    import contextvars

    holder_var: contextvars.ContextVar[str] = contextvars.ContextVar("holder_var", default="none")
    seen: list[str] = []
    original = renewing.async_backend.lock_extend

    async def extend(key: str, token: str, ttl_ms: int) -> bool:
        seen.append(holder_var.get())
        return await original(key, token, ttl_ms)

    monkeypatch.setattr(renewing.async_backend, "lock_extend", extend)

    async def hold() -> asyncio.AbstractEventLoop:
        holder_var.set("the holder")
        async with lock("ctx", exp=TTL_S, auto_renew=True):
            await asyncio.sleep(TTL_S * 0.8)
        return asyncio.get_running_loop()

    first = asyncio.run(hold())
    assert seen
    assert set(seen) == {"none"}
    assert first.is_closed()
    asyncio.run(hold())
    assert first not in leases_module._loop_renewals


def test_renewal_of_a_lease_taken_away_warns_and_stops(
    renewing: Cachify, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    renewals = renew_spy(monkeypatch, renewing, "sync", "lock_extend")
    lk = lock("stolen", exp=TTL_S, auto_renew=True)
    with lk:
        assert lk.force_release()
        wait_until(lambda: bool(lost_warnings(caplog)), timeout_s=TTL_S * 3)
        settled = len(renewals)
        time.sleep(QUIET_S)
        assert len(renewals) == settled, "renewal went on after finding the lease gone"
        assert not lk.owned()


# -- fault: a renewing holder killed with SIGKILL -----------------------------------------------
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_renewing_holder_frees_lock_and_slot_within_one_ttl(
    flushed_redis_url: str, raw: redis.Redis
) -> None:
    prefix = f"KR{uuid.uuid4().hex[:8]}-"
    ttl_s, margin_s, observe_s = 1.0, 1.5, 2.5
    c = init_cachify(url=flushed_redis_url, is_global=False, prefix=prefix, lock_poll_interval=0.05)
    lock_key = f"{prefix}crash-lock"
    holding = CTX.Event()
    (child,) = start_all(mp_workers_cache.renewing_holder, [(flushed_redis_url, prefix, ttl_s, holding)])
    with reaped(child):
        assert holding.wait(15), (
            f"the child never held the lock and the slot: {raw.lrange(prefix + 'errors', 0, -1)}"
        )
        held_since = time.monotonic()
        token = c.sync_backend.lock_holder(lock_key)
        assert token is not None
        # While the child lives, its 1 s lease outlives its TTL several times: renewal works.
        for _ in range(int(observe_s / 0.1) + 1):
            assert c.sync_backend.lock_holder(lock_key) == token, "the lock changed hands while renewed"
            assert c.pool("crash", 1).size() == 1, "the renewed slot was lost"
            if time.monotonic() - held_since >= observe_s:
                break
            time.sleep(0.1)
        held_for = time.monotonic() - held_since
        assert held_for >= 2 * ttl_s, f"observed the hold for only {held_for:.2f}s"
        assert child.is_alive()

        killed_at = sigkill(child)

        # nothing released them: still held right after the kill ...
        with pytest.raises(CachifyLockError), c.lock("crash"):
            pass
        # ... until the last renewal's TTL runs out; a waiter gets both then
        assert_crash_hold_freed_by_expiry(c, raw, prefix, killed_at, ttl_s, margin_s)
