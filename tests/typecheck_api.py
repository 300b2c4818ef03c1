"""Checked by ``mypy --strict`` (not run): the public API keeps the decorated functions' types."""

from __future__ import annotations

from typing_extensions import assert_type

from cachify_core import Cachify, cached, init_cachify, lock, once, pool, pooled, rate_limit, rate_limited
from cachify_core.backends import RoomStats

instance: Cachify = init_cachify(is_global=False)


@cached("a-{x}")
def sync_cached(x: int) -> str:
    return str(x)


@instance.cached("b-{x}")
async def async_cached(x: int) -> str:
    return str(x)


@once("o-{n}")
def sync_once(n: int) -> int:
    return n


@lock("l-{n}", nowait=False, timeout=1)
async def async_locked(n: int) -> float:
    return 1.0


@pooled("p", max_size=2)
async def async_pooled(y: str) -> bytes:
    return y.encode()


@rate_limit("r-{n}", "10/s")
def sync_rate_limited(n: int) -> int:
    return n


@instance.rate_limited("g-{t}", ["10/s", "500/h"], on_limited=lambda t: None)
async def async_rate_limited(t: str) -> str:
    return t


worker_pool = pool("worker", max_size=5)


@worker_pool.pooled(on_full=lambda x: -1)
def sync_pool_method(x: int) -> int:
    return x * 10


@instance.pool("aworker", 2).pooled(raise_on_full=True)
async def async_pool_method(x: int) -> str:
    return str(x)


def check() -> None:
    assert_type(sync_cached(1), str)
    assert_type(sync_cached.reset(1), None)
    assert_type(sync_cached.clear_cache(), None)
    assert_type(sync_once(2), int)
    assert_type(sync_once.is_locked(2), bool)
    with lock("x") as held:
        assert_type(held, lock)
    with pool("p", 3) as slot:
        assert_type(slot.size(), int)
        assert_type(slot.waiting(), RoomStats)
        assert_type(slot.waiting().oldest_wait_s, float)
    assert_type(sync_rate_limited(1), int)
    assert_type(sync_rate_limited.retry_after(1), float)
    assert_type(sync_rate_limited.remaining(1), int)
    with rate_limit("r", "5/2s", cost=2) as limiter:
        assert_type(limiter, rate_limit)
        assert_type(limiter.remaining(), int)
    assert_type(sync_pool_method(5), int)
    assert_type(sync_pool_method.size(5), int)
    assert_type(Cachify(prefix="P-", default_expiration=30), Cachify)


async def check_async() -> None:
    assert_type(await async_cached(1), str)
    assert_type(await async_cached.clear_cache(), None)
    assert_type(await async_locked.is_locked(2), bool)
    assert_type(await async_pooled.size("x"), int)
    assert_type(await async_pooled("y"), bytes)
    assert_type(await async_rate_limited("t"), str)
    assert_type(await async_rate_limited.retry_after("t"), float)
    async with rate_limited_cm as limiter:
        assert_type(await limiter.aretry_after(), float)
    assert_type(sync_raising(b"x"), bytes)
    assert_type(await async_pool_method(1), str)
    assert_type(await async_pool_method.size(1), int)
    assert_type(await instance.pool("p", 2).awaiting(), RoomStats)


rate_limited_cm = rate_limit("cm", "100/m", nowait=True)


@rate_limited("q", "1/s", raise_on_limited=True)
def sync_raising(data: bytes) -> bytes:
    return data
