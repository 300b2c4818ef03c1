"""Failure paths: cancelled acquires, event loops that come and go, server errors, expired
slots, stale-entry refresh storms. Each against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from typing import Any

import pytest
import redis

from cachify_core import Cachify, CachifyBackendError, cached, init_cachify, lock
from cachify_core.backends import wire


@pytest.fixture
def slow_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every asyncio reply arrives 100 ms after its request reached the server (a slow network)."""
    original = wire.AsyncWire.__call__

    async def delayed(self: wire.AsyncWire, *args: Any) -> Any:
        if not self.lean:
            return await original(self, *args)
        conn = await self._take()
        try:
            await conn.send_command(*args)
            await asyncio.sleep(0.1)  # the command ran on the server; its reply is in flight
            reply = await conn.read_response()
        except BaseException:
            with contextlib.suppress(BaseException):
                await asyncio.shield(conn.disconnect(nowait=True))
            raise
        self._idle.append((conn, wire._now()))
        return reply

    monkeypatch.setattr(wire.AsyncWire, "__call__", delayed)


def redis_instance(url: str, **options: Any) -> Cachify:
    return init_cachify(url=url, prefix="R-", is_global=False, **options)


async def test_cancelled_pool_enter_leaks_no_slot(flushed_redis_url: str, slow_replies: None) -> None:
    c = redis_instance(flushed_redis_url)
    slots = c.pool("p", max_size=3, slot_exp=600)
    for _ in range(5):  # bounded: each attempt is cancelled while its acquire reply is in flight
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05), slots:
                pass
    assert await slots.asize() == 0


async def test_cancelled_lock_enter_leaks_no_lock(flushed_redis_url: str, slow_replies: None) -> None:
    c = redis_instance(flushed_redis_url)
    never_expires = c.lock("L", exp=None)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.05), never_expires:
            pass
    assert not await never_expires.is_alocked()


async def test_cancelled_waiting_lock_leaks_no_lock(flushed_redis_url: str, slow_replies: None) -> None:
    c = redis_instance(flushed_redis_url, lock_poll_interval=0.05)
    holder, waiter = c.lock("W", exp=None), c.lock("W", exp=None, nowait=False, timeout=5)
    async with holder:
        task = asyncio.create_task(waiter.__aenter__())
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.025)  # the waiter's acquire is in flight now, or soon
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if task.cancelled():
        assert not await holder.is_alocked()
    else:  # it got the lock before the cancel landed: it is a normal holder
        await waiter.__aexit__(None, None, None)


def test_event_loops_that_close_do_not_keep_connections(flushed_redis_url: str) -> None:
    c = redis_instance(flushed_redis_url)
    probe = redis.Redis.from_url(flushed_redis_url)

    def connections() -> int:
        return len(probe.client_list())

    async def use() -> None:
        async with c.lock("k"):
            pass

    asyncio.run(use())
    baseline = connections()
    for _ in range(20):  # bounded
        asyncio.run(use())
    gc.collect()
    assert connections() <= baseline + 2
    assert len(c.async_backend._per_loop) <= 2  # type: ignore[attr-defined]
    probe.close()


def test_server_error_replies_become_backend_errors(
    flushed_redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = wire.SyncWire.__call__

    def out_of_memory(self: wire.SyncWire, *args: Any) -> Any:
        if args[0] in ("EVALSHA", "EVAL", "SET"):
            raise redis.exceptions.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'.")
        return original(self, *args)

    monkeypatch.setattr(wire.SyncWire, "__call__", out_of_memory)
    c = redis_instance(flushed_redis_url)

    @c.cached("k-{x}")
    def double(x: int) -> int:
        return x * 2

    with caplog.at_level(logging.ERROR, logger="cachify"):
        assert double(2) == 4  # fails open: computed, returned, logged
    assert any("OutOfMemoryError" in r.getMessage() for r in caplog.records)
    with pytest.raises(CachifyBackendError, match="lock_acquire on redis"), c.lock("x"):
        pass


def test_custom_client_errors_become_backend_errors(no_global: None) -> None:
    class Down:
        def get(self, name: str) -> Any:
            raise ConnectionError("memcache down")

        def set(self, name: str, value: Any, ex: int | None = None, nx: bool = False) -> Any:
            raise ConnectionError("memcache down")

        def delete(self, *names: str) -> Any:
            raise ConnectionError("memcache down")

    init_cachify(sync_client=Down())

    @cached("g-{x}")
    def identity(x: int) -> int:
        return x

    assert identity(1) == 1  # fails open
    with pytest.raises(CachifyBackendError, match="custom Down"), lock("x"):
        pass


def test_releasing_an_expired_slot_reports_it_lost(
    flushed_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    c = redis_instance(flushed_redis_url)
    short, long_ = c.pool("p", 2, slot_exp=0.2), c.pool("p", 2, slot_exp=60)
    with long_, caplog.at_level(logging.WARNING, logger="cachify"):
        short.__enter__()
        time.sleep(0.4)
        short.__exit__(None, None, None)
    assert any("had expired" in r.getMessage() for r in caplog.records)


def test_stale_hits_start_one_refresh(flushed_redis_url: str) -> None:
    c = redis_instance(flushed_redis_url)
    runs: list[int] = []
    gate = threading.Event()

    @c.cached("s-{x}", stale_after=0.05)
    def slow(x: int) -> int:
        runs.append(x)
        gate.wait(5)
        return x

    gate.set()
    slow(1)
    gate.clear()
    time.sleep(0.1)
    before = threading.active_count()
    for _ in range(200):  # bounded: all stale hits while the one refresh is held open
        assert slow(1) == 1
    assert threading.active_count() - before <= 1
    gate.set()
    deadline = time.monotonic() + 5
    while len(runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(runs) == 2
