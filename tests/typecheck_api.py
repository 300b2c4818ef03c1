"""Checked by ``mypy --strict`` (not run): the public API keeps the decorated functions' types."""

from __future__ import annotations

from typing_extensions import assert_type

from cachify_core import Cachify, cached, init_cachify, lock, once, pool, pooled
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


async def check_async() -> None:
    assert_type(await async_cached(1), str)
    assert_type(await async_cached.clear_cache(), None)
    assert_type(await async_locked.is_locked(2), bool)
    assert_type(await async_pooled.size("x"), int)
    assert_type(await async_pooled("y"), bytes)
    assert_type(await instance.pool("p", 2).awaiting(), RoomStats)
