"""``@once``: one call per key at a time; overlapping calls skip (or raise), on every backend and
on the custom-client one (see conftest)."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from datetime import date, datetime

import pytest

from cachify_core import Cachify, CachifyLockError, CachifyLockNotOwnedError, lock, once

from .conftest import WITH_CLIENT
from .support import WAIT_S, await_until, lost_warnings, started, wait_until


@pytest.fixture(params=WITH_CLIENT)
def backend(request: pytest.FixtureRequest) -> str:
    """Runs on the custom-client backend too (see conftest)."""
    return str(request.param)


# -- overlapping calls ---------------------------------------------------------------------------
def test_overlap_returns_none_by_default_sync(cachify: Cachify) -> None:
    entered: list[int] = []

    @once(key="check_order-{order_id}")
    def check_order(order_id: int, gate: threading.Event | None = None) -> str:
        entered.append(order_id)
        if gate is not None:
            assert gate.wait(WAIT_S)
        return f"checked-{order_id}"

    gate = threading.Event()
    first = started(lambda: check_order(1, gate))
    wait_until(lambda: 1 in entered)
    assert check_order(1) is None
    assert check_order(order_id=1) is None
    assert check_order(2) == "checked-2"  # another key runs
    assert entered.count(1) == 1  # the skipped calls never ran
    gate.set()
    assert first.finish() == "checked-1"
    assert check_order(1) == "checked-1"


async def test_overlap_returns_none_by_default_async(cachify: Cachify) -> None:
    entered: list[int] = []

    @cachify.once(key="check_order-{order_id}")
    async def check_order(order_id: int, gate: asyncio.Event | None = None) -> str:
        entered.append(order_id)
        if gate is not None:
            await asyncio.wait_for(gate.wait(), WAIT_S)
        return f"checked-{order_id}"

    gate = asyncio.Event()
    first = asyncio.create_task(check_order(1, gate))
    await await_until(lambda: 1 in entered)
    assert await check_order(1) is None
    assert await check_order(2) == "checked-2"
    assert entered.count(1) == 1
    gate.set()
    assert await asyncio.wait_for(first, WAIT_S) == "checked-1"
    assert await check_order(1) == "checked-1"


def test_overlap_returns_return_on_locked_sync(cachify: Cachify) -> None:
    inner: list[object] = []

    @once(key="another_long_running_task", return_on_locked="In progress")
    def task() -> str:
        inner.append(task())
        return "done"

    assert task() == "done"
    assert inner == ["In progress"]


async def test_overlap_returns_return_on_locked_async(cachify: Cachify) -> None:
    marker = object()
    inner: list[object] = []

    @once(key="another_long_running_task", return_on_locked=marker)
    async def task() -> str:
        inner.append(await task())
        return "done"

    assert await task() == "done"
    assert inner == [marker]


def test_overlap_raises_with_raise_on_locked_sync(cachify: Cachify) -> None:
    errors: list[str] = []

    @once(key="daily-report-{n}", raise_on_locked=True)
    def report(n: int) -> str:
        try:
            report(n)
        except CachifyLockError as exc:
            errors.append(str(exc))
        return "report"

    assert report(1) == "report"
    assert errors == ["daily-report-1-once is already locked!"]
    assert report.is_locked(1) is False


async def test_overlap_raises_with_raise_on_locked_async(cachify: Cachify) -> None:
    gate = asyncio.Event()

    @cachify.once(key="daily-report", raise_on_locked=True)
    async def report() -> str:
        await asyncio.wait_for(gate.wait(), WAIT_S)
        return "report"

    first = asyncio.create_task(report())
    await await_until(report.is_locked)
    with pytest.raises(CachifyLockError, match=r"^daily-report-once is already locked!$"):
        await report()
    gate.set()
    assert await asyncio.wait_for(first, WAIT_S) == "report"
    assert await report.is_locked() is False


def test_overlap_from_many_threads_runs_once(cachify: Cachify) -> None:
    gate = threading.Event()
    runs: list[int] = []

    @once(key="spawned")
    def spawned() -> str:
        runs.append(1)
        assert gate.wait(WAIT_S)
        return "ran"

    first = started(spawned)
    wait_until(lambda: runs == [1])
    others = [started(spawned) for _ in range(8)]
    assert [w.finish() for w in others] == [None] * 8
    gate.set()
    assert first.finish() == "ran"
    assert runs == [1]


# -- errors inside the function ------------------------------------------------------------------
def test_lock_error_raised_inside_propagates_sync(cachify: Cachify) -> None:
    @once(key="inner", return_on_locked="skipped")
    def inner() -> None:
        raise CachifyLockError("raised by the function itself")

    with pytest.raises(CachifyLockError, match="raised by the function itself"):
        inner()
    assert inner.is_locked() is False

    @once(key="uses-a-lock", return_on_locked="skipped")
    def uses_a_lock() -> str:
        with lock("resource"):
            return "ran"

    with cachify.lock("resource"), pytest.raises(CachifyLockError, match=r"^resource is already locked!$"):
        uses_a_lock()
    assert uses_a_lock() == "ran"


async def test_lock_error_raised_inside_propagates_async(cachify: Cachify) -> None:
    @once(key="inner")
    async def inner() -> None:
        raise CachifyLockNotOwnedError("raised by the function itself")

    with pytest.raises(CachifyLockNotOwnedError, match="raised by the function itself"):
        await inner()
    assert await inner.is_locked() is False

    @cachify.once(key="uses-a-lock", return_on_locked="skipped")
    async def uses_a_lock() -> str:
        async with lock("resource"):
            return "ran"

    async with cachify.lock("resource"):
        with pytest.raises(CachifyLockError, match=r"^resource is already locked!$"):
            await uses_a_lock()
    assert await uses_a_lock() == "ran"


# -- the hold is released ------------------------------------------------------------------------
def test_hold_released_after_success_and_exceptions_sync(cachify: Cachify) -> None:
    seen: list[bool] = []

    @once(key="r-{n}")
    def run(n: int, fail: type[BaseException] | None = None) -> int:
        seen.append(run.is_locked(n))
        if fail is not None:
            raise fail(n)
        return n

    assert run(1) == 1
    assert run.is_locked(1) is False
    with pytest.raises(ValueError):
        run(1, ValueError)
    assert run.is_locked(1) is False
    with pytest.raises(KeyboardInterrupt):
        run(1, KeyboardInterrupt)
    assert run.is_locked(1) is False
    assert run(1) == 1
    assert seen == [True, True, True, True]


async def test_hold_released_after_success_exceptions_and_cancellation_async(cachify: Cachify) -> None:
    entered = asyncio.Event()

    @once(key="r-{n}")
    async def run(n: int, fail: bool = False, hang: bool = False) -> int:
        assert await run.is_locked(n)
        if fail:
            raise ValueError(n)
        if hang:
            entered.set()
            await asyncio.sleep(WAIT_S * 10)
        return n

    assert await run(1) == 1
    assert await run.is_locked(1) is False
    with pytest.raises(ValueError):
        await run(1, fail=True)
    assert await run.is_locked(1) is False

    task = asyncio.create_task(run(1, hang=True))
    await asyncio.wait_for(entered.wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await run.is_locked(1) is False
    assert await run(1) == 1


def test_hold_expires_after_default_lock_expiration(
    make_cachify: Callable[..., Cachify], warnings_log: pytest.LogCaptureFixture
) -> None:
    c = make_cachify(default_lock_expiration=0.3)
    gate = threading.Event()
    runs: list[str] = []

    @c.once(key="slow")
    def slow(tag: str, wait: bool = False) -> str:
        runs.append(tag)
        if wait:
            assert gate.wait(WAIT_S)
        return tag

    first = started(lambda: slow("first", True))
    wait_until(lambda: runs == ["first"])
    assert slow("skipped") is None
    wait_until(lambda: not slow.is_locked("any"))  # a constant key: any arguments name it
    assert slow("after expiry") == "after expiry"
    gate.set()
    assert first.finish() == "first"
    assert runs == ["first", "after expiry"]
    assert len(lost_warnings(warnings_log)) == 1  # the first call's hold had lapsed


# -- attached helpers ----------------------------------------------------------------------------
def test_attached_helpers_sync(cachify: Cachify, warnings_log: pytest.LogCaptureFixture) -> None:
    entered: list[int] = []

    @once(key="job-{n}")
    def job(n: int, gate: threading.Event | None = None) -> int:
        entered.append(n)
        if gate is not None:
            assert gate.wait(WAIT_S)
        return n

    for name in ("is_locked", "release", "force_release"):
        assert not inspect.iscoroutinefunction(getattr(job, name)), name

    gate_a, gate_b = threading.Event(), threading.Event()
    call_a = started(lambda: job(1, gate_a))
    wait_until(lambda: entered == [1])
    assert job.is_locked(1) is True
    assert job.is_locked(n=2) is False
    job.release(1)
    assert job.is_locked(1) is False
    with pytest.raises(CachifyLockNotOwnedError):
        job.release(1)
    call_b = started(lambda: job(1, gate_b))  # runs, as the hold was released
    wait_until(lambda: entered == [1, 1])
    gate_a.set()
    assert call_a.finish() == 1
    assert job.is_locked(1) is True, "the released call's exit deleted the next call's hold"
    assert job.force_release(1) is True
    assert job.is_locked(1) is False
    gate_b.set()
    assert call_b.finish() == 1
    assert job.force_release(1) is False
    assert len(lost_warnings(warnings_log)) == 1  # call_b's exit found its hold gone


async def test_attached_helpers_async(cachify: Cachify) -> None:
    entered: list[int] = []

    @once(key="job-{n}")
    async def job(n: int, gate: asyncio.Event | None = None) -> int:
        entered.append(n)
        if gate is not None:
            await asyncio.wait_for(gate.wait(), WAIT_S)
        return n

    for name in ("is_locked", "release", "force_release"):
        assert inspect.iscoroutinefunction(getattr(job, name)), name

    gate = asyncio.Event()
    task = asyncio.create_task(job(1, gate))
    await await_until(lambda: entered == [1])
    assert await job.is_locked(1) is True
    await job.release(n=1)
    assert await job.is_locked(1) is False
    with pytest.raises(CachifyLockNotOwnedError):
        await job.release(1)
    assert await job(1) == 1  # the released key is free
    gate.set()
    assert await asyncio.wait_for(task, WAIT_S) == 1

    # a hold this process never took: release refuses, force_release deletes
    full_key = f"{cachify.prefix}job-5-once"
    assert await cachify.async_backend.lock_acquire(full_key, "elsewhere:1:ffff:0", None, False)
    assert await job.is_locked(5) is True
    assert await job(5) is None
    with pytest.raises(CachifyLockNotOwnedError):
        await job.release(5)
    assert await job.is_locked(5) is True
    assert await job.force_release(5) is True
    assert await job(5) == 5


def test_once_and_lock_keys_are_apart(cachify: Cachify) -> None:
    @once(key="same")
    def same() -> str:
        return "ran"

    with cachify.lock("same"):
        assert same() == "ran"


# -- dynamic keys ----------------------------------------------------------------------------------
def test_dynamic_key_with_attribute_access_sync(cachify: Cachify) -> None:
    entered: list[date] = []

    @once(key="create-transactions-{for_date.year}-{for_date.month}-{for_date.day}", raise_on_locked=True)
    def create_transactions(for_date: date, gate: threading.Event | None = None) -> date:
        entered.append(for_date)
        if gate is not None:
            assert gate.wait(WAIT_S)
        return for_date

    gate = threading.Event()
    running = started(lambda: create_transactions(date(2024, 1, 2), gate))
    wait_until(lambda: len(entered) == 1)
    assert create_transactions.is_locked(date(2024, 1, 2)) is True
    assert create_transactions.is_locked(for_date=datetime(2024, 1, 2, 15, 30)) is True  # same key
    assert create_transactions.is_locked(date(2024, 1, 3)) is False
    assert create_transactions(date(2024, 1, 3)) == date(2024, 1, 3)
    with pytest.raises(CachifyLockError, match=r"^create-transactions-2024-1-2-once is already locked!$"):
        create_transactions(for_date=datetime(2024, 1, 2, 9))
    assert cachify.sync_backend.lock_holder(f"{cachify.prefix}create-transactions-2024-1-2-once") is not None
    gate.set()
    assert running.finish() == date(2024, 1, 2)
    assert create_transactions.is_locked(date(2024, 1, 2)) is False


async def test_dynamic_key_with_attribute_access_async(cachify: Cachify) -> None:
    gate = asyncio.Event()

    @cachify.once(key="create-transactions-{for_date.year}-{for_date.month}-{for_date.day}")
    async def create_transactions(for_date: date, wait: bool = False) -> date:
        if wait:
            await asyncio.wait_for(gate.wait(), WAIT_S)
        return for_date

    running = asyncio.create_task(create_transactions(date(2024, 1, 2), wait=True))
    await await_until(lambda: create_transactions.is_locked(date(2024, 1, 2)))
    assert await create_transactions(date(2024, 1, 2)) is None
    assert await create_transactions(date(2025, 1, 2)) == date(2025, 1, 2)
    gate.set()
    assert await asyncio.wait_for(running, WAIT_S) == date(2024, 1, 2)
    assert await create_transactions.is_locked(for_date=date(2024, 1, 2)) is False


def test_instance_once_uses_its_instance(cachify: Cachify, make_cachify: Callable[..., Cachify]) -> None:
    a = make_cachify(prefix=f"A{cachify.prefix}")
    seen: dict[str, object] = {}

    @a.once(key="task-{n}")
    def task(n: int) -> int:
        seen["attached"] = task.is_locked(n)
        seen["instance"] = a.sync_backend.lock_holder(f"{a.prefix}task-{n}-once") is not None
        seen["global"] = cachify.sync_backend.lock_holder(f"{cachify.prefix}task-{n}-once") is not None
        return n

    assert task(1) == 1
    assert seen == {"attached": True, "instance": True, "global": False}
