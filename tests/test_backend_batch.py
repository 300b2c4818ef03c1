"""``batch``: several primitive calls at once — one round trip on a single Redis server, one
call after the other on a cluster and the memory backend — with the results of the same calls
made one by one."""

from __future__ import annotations

import pytest

from cachify_core import Cachify, CachifyBackendError
from cachify_core.backends.base import Call, RoomSettings, RoomStatus
from cachify_core.steps import Batch, Steps, run_async, run_blocking

from .conftest import WITH_CLUSTER


def _steps(c: Cachify) -> Steps[tuple[object, ...]]:
    p = c.prefix
    room = RoomSettings(registry=p + "waiting-rooms", max_size=1, slot_ttl_ms=10_000)
    results = yield Batch(
        lambda b: b.lock_acquire(p + "l-lock", "t1", 5_000, 0.0),
        lambda b: b.cache_get(p + "ns", "k"),
        lambda b: b.room_acquire(p + "r-pool", "s1", "e1", b"one", room, None),
        lambda b: b.room_acquire(p + "r-pool", "s2", "e2", b"two", room, None),
        lambda b: b.lock_extend(p + "l-lock", "t1", None),
    )
    released = yield Batch(
        lambda b: b.room_release(p + "r-pool", "s1", room, None),
        lambda b: b.lock_release(p + "l-lock", "t1"),
        lambda b: b.pool_release(p + "r-pool", "nobody"),
    )
    return (*results, *released)


def _check(results: tuple[object, ...]) -> None:
    took, read, first, second, persisted, released, let_go, nobody = results
    assert took is True
    assert read.value is None  # type: ignore[attr-defined]
    assert first.status is RoomStatus.ACQUIRED  # type: ignore[attr-defined]
    assert second.status is RoomStatus.PARKED  # type: ignore[attr-defined]
    assert persisted is True
    assert released.released is True  # type: ignore[attr-defined]
    assert [h.payload for h in released.handed] == [b"two"]  # type: ignore[attr-defined]
    assert let_go is True
    assert nobody is False


@pytest.mark.parametrize("backend", WITH_CLUSTER)
def test_a_batch_answers_as_its_calls_do(cachify: Cachify) -> None:
    _check(run_blocking(_steps(cachify), cachify.sync_backend))


@pytest.mark.parametrize("backend", WITH_CLUSTER)
async def test_a_batch_answers_as_its_calls_do_async(cachify: Cachify) -> None:
    _check(await run_async(_steps(cachify), cachify.async_backend))


@pytest.mark.parametrize("backend", ["redis"])
def test_a_batch_loads_scripts_the_server_forgot(cachify: Cachify) -> None:
    cachify.sync_backend.client.script_flush()  # type: ignore[attr-defined]
    _check(run_blocking(_steps(cachify), cachify.sync_backend))


@pytest.mark.parametrize("backend", ["redis"])
async def test_a_batch_loads_scripts_the_server_forgot_async(cachify: Cachify) -> None:
    cachify.sync_backend.client.script_flush()  # type: ignore[attr-defined]
    _check(await run_async(_steps(cachify), cachify.async_backend))


@pytest.mark.parametrize("backend", ["redis"])
def test_one_failing_call_fails_the_batch_naming_it(cachify: Cachify) -> None:
    raw = cachify.sync_backend.client  # type: ignore[attr-defined]
    raw.hset("{" + cachify.prefix + "w-lock}", "x", "1")  # not a string: lock_extend's GET fails
    calls = [
        Call("lock_extend", (cachify.prefix + "w-lock", "t", 1000)),
        Call("cache_get", (cachify.prefix + "ns", "k")),
    ]
    with pytest.raises(CachifyBackendError) as caught:
        cachify.sync_backend.batch(calls)
    assert "batch of lock_extend, cache_get" in str(caught.value)
