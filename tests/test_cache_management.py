"""Cache management: ``clear_cache``, ``precache_value``, ``clear_being_calculated``, ``reset``;
``@invalidates``; ``stale_after``; and what ``@cached`` (fail open) and locks, ``once`` and pools
(fail closed) do when the backend is down.

Behavioural tests run on each backend of the ``cachify`` fixture (memory, redis), sync and
async. Backend-down tests point a redis-py client at a port nothing listens on (or a socket
that never answers) with 0.5 s socket timeouts.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cachify_core import (
    Cachify,
    CachifyBackendError,
    CachifyLockError,
    cached,
    init_cachify,
    invalidates,
    lock,
    once,
    pool,
    pooled,
)
from cachify_core.errors import CachifyError

from .servers import free_port
from .storage import stored
from .support import KINDS, Counter, counting, invoke
from .test_stampede import ServerCommands

#: Upper bound of every wait in this file, in seconds.
WAIT_S = 5.0


# -- helpers --------------------------------------------------------------------------------
class _Where(str):
    """Names an entry for the codec's log lines, as a string or as a callable making one."""

    def __call__(self) -> str:
        return str(self)


def decoded(c: Cachify, full_key: str) -> Any:
    """The value stored under ``full_key`` (``None`` if absent), read without calling anything."""
    raw = stored(c, full_key)
    if raw is None:
        return None
    entry = c.codec.unpack(raw, _Where(full_key))
    return None if entry is None else entry.value


# -- clear_cache -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
async def test_clear_cache_empties_every_entry_of_that_function_only(cachify: Cachify, kind: str) -> None:
    p = cachify.prefix
    fn, calls = counting(kind)
    other_fn, other_calls = counting(kind)
    longer_fn, longer_calls = counting(kind)
    f = cached("u-{a}")(fn)
    g = cached("v-{a}")(other_fn)
    h = cached("u-{a}-full")(longer_fn)  # a template that starts like f's

    for a in (1, 2, 3):
        await invoke(f, a)
        await invoke(g, a)
        await invoke(h, a)
    await invoke(f.clear_cache)

    for a in (1, 2, 3):
        assert stored(cachify, f"{p}u-{a}-cached") is None
        assert stored(cachify, f"{p}v-{a}-cached") is not None
        assert stored(cachify, f"{p}u-{a}-full-cached") is not None
    for a in (1, 2, 3):
        assert await invoke(f, a) == a
        await invoke(g, a)
        await invoke(h, a)
    assert calls == [(1, 0), (2, 0), (3, 0)] * 2
    assert other_calls == [(1, 0), (2, 0), (3, 0)]
    assert longer_calls == [(1, 0), (2, 0), (3, 0)]
    # and the cache works again after the clear
    await invoke(f, 1)
    assert len(calls) == 6


@pytest.mark.parametrize("backend", ["redis"])  # round trips exist on Redis only
@pytest.mark.parametrize("kind", KINDS)
async def test_clear_cache_is_one_command_on_redis_however_many_entries(
    cachify: Cachify, kind: str, flushed_redis_url: str
) -> None:
    fn, calls = counting(kind)
    f = cached("many-{a}")(fn)
    for a in range(50):
        await invoke(f, a)
    with ServerCommands(flushed_redis_url) as server:
        await invoke(f.clear_cache)
        sent = server.seen()
    assert len(sent) == 1, f"clear_cache sent {sent}"  # not a SCAN, KEYS or DEL per entry
    await invoke(f, 7)
    await invoke(f, 8)
    assert len(calls) == 52


def test_a_result_computed_across_a_clear_is_not_stored(cachify: Cachify) -> None:
    counter = Counter()
    computing, gate = threading.Event(), threading.Event()

    @cached("across-{x}")
    def compute(x: int) -> str:
        value = counter.next()
        if value == "run-1":
            computing.set()
            assert gate.wait(WAIT_S)
        return value

    results: list[str] = []
    t = threading.Thread(target=lambda: results.append(compute(1)), daemon=True)
    t.start()
    assert computing.wait(WAIT_S)
    compute.clear_cache()
    gate.set()
    t.join(WAIT_S)
    assert results == ["run-1"]  # the caller still gets its result ...
    assert compute(1) == "run-2"  # ... but it was computed before the clear: not stored
    assert counter.calls == 2


# -- multi-layer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
async def test_multi_layer_clear_cache_clears_both_layers(
    cachify: Cachify, make_cachify: Callable[..., Cachify], kind: str
) -> None:
    local = make_cachify(prefix=f"L1-{uuid.uuid4().hex[:6]}-")
    fn, calls = counting(kind)
    inner = cached("l2-{a}")(fn)  # the global instance
    outer = local.cached("l1-{a}")(inner)

    await invoke(outer, 1)
    await invoke(outer, 2)
    assert calls == [(1, 0), (2, 0)]
    # clearing only the inner layer leaves the outer one answering
    await invoke(inner.clear_cache)
    assert stored(cachify, f"{cachify.prefix}l2-1-cached") is None
    assert stored(local, f"{local.prefix}l1-1-cached") is not None
    await invoke(outer, 1)
    assert calls == [(1, 0), (2, 0)]
    # the outer clear goes through both
    await invoke(inner, 1)  # re-fill the inner layer
    assert calls == [(1, 0), (2, 0), (1, 0)]
    await invoke(outer.clear_cache)
    for a in (1, 2):
        assert stored(local, f"{local.prefix}l1-{a}-cached") is None
        assert stored(cachify, f"{cachify.prefix}l2-{a}-cached") is None
    await invoke(outer, 1)
    assert calls == [(1, 0), (2, 0), (1, 0), (1, 0)]


# -- reset stays per arguments ----------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
async def test_reset_is_per_arguments(cachify: Cachify, kind: str) -> None:
    fn, calls = counting(kind)
    f = cached("r-{a}-{b}")(fn)
    await invoke(f, 1, 2)
    await invoke(f, 3, 4)
    await invoke(f.reset, 1, 2)
    assert stored(cachify, f"{cachify.prefix}r-1-2-cached") is None
    assert stored(cachify, f"{cachify.prefix}r-3-4-cached") is not None
    await invoke(f, 1, 2)
    await invoke(f, 3, 4)
    assert calls == [(1, 2), (3, 4), (1, 2)]


# -- precache_value -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
async def test_precache_value_is_served_without_running(cachify: Cachify, kind: str) -> None:
    if kind == "sync":
        calls: list[Any] = []

        @cached("pre-{a}-{b}")
        def f(a: int, b: int = 0) -> Any:
            calls.append((a, b))
            return a + b

    else:
        calls = []

        @cached("pre-{a}-{b}")
        async def f(a: int, b: int = 0) -> Any:
            calls.append((a, b))
            return a + b

    await invoke(f.precache_value, 1, b=2, value_to_cache={"pre": "cached"})
    await invoke(f.precache_value, 5, value_to_cache=None)  # None is a value like any other
    assert await invoke(f, 1, 2) == {"pre": "cached"}
    assert await invoke(f, a=1, b=2) == {"pre": "cached"}
    assert await invoke(f, 5) is None
    assert calls == []
    # it overwrites a computed entry too
    assert await invoke(f, 7, 7) == 14
    await invoke(f.precache_value, 7, 7, value_to_cache="over")
    assert await invoke(f, 7, 7) == "over"
    assert calls == [(7, 7)]


# -- clear_being_calculated -------------------------------------------------------------------
def test_clear_being_calculated_lets_a_new_miss_compute_sync(cachify: Cachify) -> None:
    counter = Counter()
    computing, gate = threading.Event(), threading.Event()

    @cached("calc-{x}")  # default wait_timeout: 30 s
    def compute(x: int) -> str:
        value = counter.next()
        if value == "run-1":
            computing.set()
            assert gate.wait(WAIT_S * 2)
        return value

    results: dict[str, str] = {}
    first = threading.Thread(target=lambda: results.update(first=compute(1)), daemon=True)
    first.start()
    assert computing.wait(WAIT_S)
    waiter = threading.Thread(target=lambda: results.update(waiter=compute(1)), daemon=True)
    waiter.start()
    waiter.join(0.5)
    try:
        assert waiter.is_alive(), "a miss did not wait for the computation in flight"
        assert counter.calls == 1

        compute.clear_being_calculated()
        began = time.monotonic()
        assert compute(1) == "run-2"  # a new miss computes instead of waiting
        assert time.monotonic() - began < WAIT_S
    finally:
        gate.set()
        first.join(WAIT_S)
        waiter.join(WAIT_S)
    assert not first.is_alive()
    assert not waiter.is_alive()
    assert results["first"] == "run-1"
    assert results["waiter"] in ("run-1", "run-2")
    assert counter.calls == 2


async def test_clear_being_calculated_lets_a_new_miss_compute_async(cachify: Cachify) -> None:
    counter = Counter()
    computing, gate = asyncio.Event(), asyncio.Event()

    @cached("calc-{x}")
    async def compute(x: int) -> str:
        value = counter.next()
        if value == "run-1":
            computing.set()
            await asyncio.wait_for(gate.wait(), WAIT_S * 2)
        return value

    first = asyncio.create_task(compute(1))
    await asyncio.wait_for(computing.wait(), WAIT_S)
    waiter = asyncio.create_task(compute(1))
    await asyncio.sleep(0.5)
    try:
        assert not waiter.done(), "a miss did not wait for the computation in flight"
        assert counter.calls == 1
        await compute.clear_being_calculated()
        assert await asyncio.wait_for(compute(1), WAIT_S) == "run-2"
    finally:
        gate.set()
    assert await asyncio.wait_for(first, WAIT_S) == "run-1"
    assert await asyncio.wait_for(waiter, WAIT_S) in ("run-1", "run-2")
    assert counter.calls == 2


# -- @invalidates --------------------------------------------------------------------------------
def user_reader(kind: str, versions: dict[int, int]) -> tuple[Any, list[int]]:
    calls: list[int] = []
    if kind == "sync":

        @cached("user-{user_id}")
        def get_user(user_id: int) -> dict[str, int]:
            calls.append(user_id)
            return {"id": user_id, "v": versions.get(user_id, 0)}

        return get_user, calls

    @cached("user-{user_id}")
    async def aget_user(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        return {"id": user_id, "v": versions.get(user_id, 0)}

    return aget_user, calls


@pytest.mark.parametrize("mutation_kind", KINDS)
@pytest.mark.parametrize("cached_kind", KINDS)
async def test_invalidates_evicts_the_same_arguments_before_the_mutation_runs(
    cachify: Cachify, cached_kind: str, mutation_kind: str
) -> None:
    p = cachify.prefix
    versions: dict[int, int] = {}
    get_user, calls = user_reader(cached_kind, versions)
    seen_inside: list[Any] = []

    def body(user_id: int) -> str:
        seen_inside.append(
            (stored(cachify, f"{p}user-{user_id}-cached"), stored(cachify, f"{p}user-2-cached"))
        )
        versions[user_id] = versions.get(user_id, 0) + 1
        return "bumped"

    if mutation_kind == "sync":

        @invalidates(get_user)
        def bump(user_id: int) -> str:
            return body(user_id)

    else:

        @invalidates(get_user)
        async def bump(user_id: int) -> str:
            return body(user_id)

    assert await invoke(get_user, 1) == {"id": 1, "v": 0}
    assert await invoke(get_user, 2) == {"id": 2, "v": 0}
    assert await invoke(bump, 1) == "bumped"
    ((entry_1, entry_2),) = seen_inside
    assert entry_1 is None, "the entry was still there when the mutation ran"
    assert entry_2 is not None, "another argument's entry was evicted"
    assert await invoke(get_user, 1) == {"id": 1, "v": 1}
    assert await invoke(get_user, 2) == {"id": 2, "v": 0}
    assert calls == [1, 2, 1]
    await invoke(bump, user_id=2)  # keyword arguments name the same entry
    assert await invoke(get_user, 2) == {"id": 2, "v": 1}
    assert calls == [1, 2, 1, 2]


@pytest.mark.parametrize("kind", KINDS)
async def test_invalidates_with_extra_mutation_arguments_uses_the_shared_ones(
    cachify: Cachify, kind: str
) -> None:
    """The module's own example: ``rename_user(user_id, name)`` invalidates ``get_user(user_id)``."""
    versions: dict[int, int] = {}
    get_user, calls = user_reader(kind, versions)

    if kind == "sync":

        @invalidates(get_user)
        def rename_user(user_id: int, name: str) -> str:
            versions[user_id] = versions.get(user_id, 0) + 1
            return name

    else:

        @invalidates(get_user)
        async def rename_user(user_id: int, name: str) -> str:
            versions[user_id] = versions.get(user_id, 0) + 1
            return name

    await invoke(get_user, 1)
    assert await invoke(rename_user, 1, "x") == "x"
    assert await invoke(get_user, 1) == {"id": 1, "v": 1}
    assert await invoke(rename_user, 1, name="y") == "y"
    assert await invoke(get_user, 1) == {"id": 1, "v": 2}
    assert calls == [1, 1, 1]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_failing_mutation_still_leaves_no_entry(cachify: Cachify, kind: str) -> None:
    versions: dict[int, int] = {}
    get_user, calls = user_reader(kind, versions)

    def body(user_id: int) -> None:
        versions[user_id] = 7  # half-done write
        raise RuntimeError("db error")

    if kind == "sync":

        @invalidates(get_user)
        def update(user_id: int) -> None:
            body(user_id)

    else:

        @invalidates(get_user)
        async def update(user_id: int) -> None:
            body(user_id)

    await invoke(get_user, 1)
    with pytest.raises(RuntimeError, match="db error"):
        await invoke(update, 1)
    assert stored(cachify, f"{cachify.prefix}user-1-cached") is None
    assert await invoke(get_user, 1) == {"id": 1, "v": 7}
    assert calls == [1, 1]


@pytest.mark.parametrize(
    "key_fn",
    [
        lambda order: {"user_id": order["uid"]},  # keyword arguments
        lambda order: (order["uid"],),  # positional arguments
        lambda order: order["uid"],  # the single positional argument
    ],
    ids=["dict", "tuple", "single"],
)
@pytest.mark.parametrize("kind", KINDS)
async def test_invalidates_key_fn_maps_the_arguments(
    cachify: Cachify, kind: str, key_fn: Callable[[Any], Any]
) -> None:
    versions: dict[int, int] = {}
    get_user, calls = user_reader(kind, versions)

    if kind == "sync":

        @invalidates(get_user, key_fn=key_fn)
        def place_order(order: dict[str, int]) -> None:
            versions[order["uid"]] = versions.get(order["uid"], 0) + 1

    else:

        @invalidates(get_user, key_fn=key_fn)
        async def place_order(order: dict[str, int]) -> None:
            versions[order["uid"]] = versions.get(order["uid"], 0) + 1

    await invoke(get_user, 4)
    await invoke(get_user, 5)
    await invoke(place_order, {"uid": 4, "item": 99})
    assert stored(cachify, f"{cachify.prefix}user-4-cached") is None
    assert stored(cachify, f"{cachify.prefix}user-5-cached") is not None
    assert await invoke(get_user, 4) == {"id": 4, "v": 1}
    assert calls == [4, 5, 4]


@pytest.mark.parametrize("kind", KINDS)
async def test_invalidates_clear_all(cachify: Cachify, kind: str) -> None:
    versions: dict[int, int] = {}
    get_user, calls = user_reader(kind, versions)
    other_fn, other_calls = counting(kind)
    other = cached("other-{a}")(other_fn)

    if kind == "sync":

        @invalidates(get_user, clear_all=True)
        def import_users(rows: list[int]) -> None:
            for r in rows:
                versions[r] = 9

    else:

        @invalidates(get_user, clear_all=True)
        async def import_users(rows: list[int]) -> None:
            for r in rows:
                versions[r] = 9

    for u in (1, 2, 3):
        await invoke(get_user, u)
    await invoke(other, 1)
    await invoke(import_users, [1, 2, 3])
    for u in (1, 2, 3):
        assert await invoke(get_user, u) == {"id": u, "v": 9}
    await invoke(other, 1)
    assert calls == [1, 2, 3, 1, 2, 3]
    assert other_calls == [(1, 0)]


@pytest.mark.parametrize("kind", KINDS)
async def test_invalidates_several_targets_of_mixed_kinds(cachify: Cachify, kind: str) -> None:
    versions: dict[int, int] = {}
    get_user_sync, sync_calls = user_reader("sync", versions)
    async_calls: list[int] = []

    @cached("profile-{user_id}")
    async def get_profile(user_id: int) -> int:
        async_calls.append(user_id)
        return versions.get(user_id, 0)

    if kind == "sync":

        @invalidates(get_user_sync, get_profile)
        def bump(user_id: int) -> None:
            versions[user_id] = versions.get(user_id, 0) + 1

    else:

        @invalidates(get_user_sync, get_profile)
        async def bump(user_id: int) -> None:
            versions[user_id] = versions.get(user_id, 0) + 1

    get_user_sync(1)
    await get_profile(1)
    await invoke(bump, 1)
    assert get_user_sync(1) == {"id": 1, "v": 1}
    assert await get_profile(1) == 1
    assert sync_calls == [1, 1]
    assert async_calls == [1, 1]


@pytest.mark.parametrize("kind", KINDS)
async def test_invalidates_resets_every_cached_layer(
    cachify: Cachify, make_cachify: Callable[..., Cachify], kind: str
) -> None:
    local = make_cachify(prefix=f"L1-{uuid.uuid4().hex[:6]}-")
    fn, calls = counting(kind)
    inner = cached("il2-{a}")(fn)
    outer = local.cached("il1-{a}")(inner)

    @invalidates(outer)
    def touch(a: int) -> None:
        pass

    await invoke(outer, 1)
    touch(1)
    assert stored(local, f"{local.prefix}il1-1-cached") is None
    assert stored(cachify, f"{cachify.prefix}il2-1-cached") is None
    await invoke(outer, 1)
    assert calls == [(1, 0), (1, 0)]


def test_invalidates_rejects_targets_that_are_not_cached(cachify: Cachify) -> None:
    def plain(user_id: int) -> int:
        return user_id

    @lock("l-{user_id}")
    def locked(user_id: int) -> int:
        return user_id

    @once("o-{user_id}")
    def run_once(user_id: int) -> int:
        return user_id

    for target in (plain, locked, run_once):
        with pytest.raises(TypeError, match="@cached"):
            invalidates(target)
    with pytest.raises(TypeError):
        invalidates()

    @cached("c-{user_id}")
    def get(user_id: int) -> int:
        return user_id

    with pytest.raises(TypeError):
        invalidates(get, key_fn=lambda u: u, clear_all=True)
    with pytest.raises(TypeError):
        invalidates(get, key_fn="user_id")  # type: ignore[arg-type]


# -- stale_after ----------------------------------------------------------------------------------
#: Entries older than this are served stale; a refresh takes ``REFRESH_S``.
STALE_S = 0.5
REFRESH_S = 1.0


def wait_for_value(c: Cachify, full_key: str, value: Any, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.02) + 1):
        if decoded(c, full_key) == value:
            return
        assert time.monotonic() < deadline, f"{full_key} never became {value!r}"
        time.sleep(0.02)
    raise AssertionError(f"{full_key} never became {value!r}")


async def await_value(c: Cachify, full_key: str, value: Any, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.02) + 1):
        if decoded(c, full_key) == value:
            return
        assert time.monotonic() < deadline, f"{full_key} never became {value!r}"
        await asyncio.sleep(0.02)
    raise AssertionError(f"{full_key} never became {value!r}")


def test_stale_entry_is_served_and_refreshed_in_the_background_sync(cachify: Cachify) -> None:
    counter = Counter()
    full = f"{cachify.prefix}stale-1-cached"

    @cached("stale-{x}", stale_after=STALE_S)
    def compute(x: int) -> str:
        value = counter.next()
        if value != "run-1":
            time.sleep(REFRESH_S)
        return value

    assert compute(1) == "run-1"
    assert compute(1) == "run-1"  # fresh: a plain hit
    assert counter.calls == 1
    time.sleep(STALE_S * 1.4)
    began = time.monotonic()
    assert compute(1) == "run-1"  # stale: served at once ...
    assert time.monotonic() - began < REFRESH_S / 2, "a stale hit waited for the refresh"
    wait_for_value(cachify, full, "run-2")  # ... and recomputed behind it
    assert compute(1) == "run-2"
    assert counter.calls == 2


async def test_stale_entry_is_served_and_refreshed_in_the_background_async(cachify: Cachify) -> None:
    counter = Counter()
    full = f"{cachify.prefix}stale-1-cached"

    @cached("stale-{x}", stale_after=STALE_S)
    async def compute(x: int) -> str:
        value = counter.next()
        if value != "run-1":
            await asyncio.sleep(REFRESH_S)
        return value

    assert await compute(1) == "run-1"
    assert await compute(1) == "run-1"
    assert counter.calls == 1
    await asyncio.sleep(STALE_S * 1.4)
    began = time.monotonic()
    assert await compute(1) == "run-1"
    assert time.monotonic() - began < REFRESH_S / 2, "a stale hit waited for the refresh"
    await await_value(cachify, full, "run-2")
    assert await compute(1) == "run-2"
    assert counter.calls == 2


def test_concurrent_stale_hits_run_one_refresh_sync(cachify: Cachify) -> None:
    counter = Counter()
    full = f"{cachify.prefix}stale-many-cached"

    @cached("stale-many", stale_after=STALE_S)
    def compute() -> str:
        value = counter.next()
        if value != "run-1":
            time.sleep(REFRESH_S)
        return value

    compute()
    time.sleep(STALE_S * 1.4)
    start = threading.Barrier(20)
    results: list[str] = []

    def hit() -> None:
        start.wait(WAIT_S)
        results.append(compute())

    threads = [threading.Thread(target=hit, daemon=True) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert results == ["run-1"] * 20
    wait_for_value(cachify, full, "run-2")
    time.sleep(0.3)  # room for a duplicate refresh to show itself
    assert counter.calls == 2


async def test_concurrent_stale_hits_run_one_refresh_async(cachify: Cachify) -> None:
    counter = Counter()
    full = f"{cachify.prefix}stale-many-cached"

    @cached("stale-many", stale_after=STALE_S)
    async def compute() -> str:
        value = counter.next()
        if value != "run-1":
            await asyncio.sleep(REFRESH_S)
        return value

    await compute()
    await asyncio.sleep(STALE_S * 1.4)
    results = await asyncio.gather(*(compute() for _ in range(20)))
    assert results == ["run-1"] * 20
    await await_value(cachify, full, "run-2")
    await asyncio.sleep(0.3)
    assert counter.calls == 2


def test_without_stale_after_an_old_entry_is_a_plain_hit(cachify: Cachify) -> None:
    counter = Counter()

    @cached("not-stale")
    def compute() -> str:
        return counter.next()

    compute()
    time.sleep(STALE_S * 1.4)
    assert compute() == "run-1"
    time.sleep(0.3)
    assert counter.calls == 1


# -- the backend down: cached fails open, locks/once/pools fail closed ------------------------
NO_RETRY = {"retry": Retry(NoBackoff(), 0)}


def down_instance(port: int, **client_options: Any) -> Cachify:
    """The global instance on a Redis at ``port``, sync client given, async twin derived."""
    client = redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5, **client_options
    )
    return init_cachify(sync_client=client, prefix="down-", lock_poll_interval=0.05)


@pytest.fixture
def down(no_global: None, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[Cachify, int]]:
    """A global instance whose sync and async clients point at a closed port (no retries)."""
    port = free_port()
    sync_client = redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5, **NO_RETRY
    )
    async_client = aredis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=aredis.retry.Retry(NoBackoff(), 0),  # type: ignore[attr-defined]
    )
    caplog.set_level(logging.ERROR, logger="cachify")
    c = init_cachify(
        sync_client=sync_client, async_client=async_client, prefix="down-", lock_poll_interval=0.05
    )
    yield c, port
    sync_client.close()


@pytest.fixture
def unresponsive() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()


def error_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("kind", KINDS)
async def test_cached_fails_open_when_the_backend_is_down(
    down: tuple[Cachify, int], kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    _c, port = down
    fn, calls = counting(kind)
    fn.__qualname__ = "price_of"
    f = cached("price-{a}")(fn)
    began = time.monotonic()
    assert await invoke(f, 2) == 2
    assert await invoke(f, 2) == 2
    assert time.monotonic() - began < WAIT_S
    assert calls == [(2, 0), (2, 0)]  # nothing could be cached: it runs every time
    messages = error_messages(caplog)
    assert messages, "the outage was not logged"
    assert any("price_of" in m and str(port) in m for m in messages), messages


@pytest.mark.parametrize("kind", KINDS)
async def test_cached_raises_when_told_to(down: tuple[Cachify, int], kind: str) -> None:
    _c, port = down
    fn, calls = counting(kind)
    f = cached("strict-{a}", on_backend_error="raise")(fn)
    with pytest.raises(CachifyBackendError) as info:
        await invoke(f, 1)
    assert "cache_get" in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert calls == []


@pytest.mark.parametrize("kind", KINDS)
async def test_locks_once_and_pools_fail_closed(down: tuple[Cachify, int], kind: str) -> None:
    _c, port = down
    ran: list[str] = []
    if kind == "sync":

        @lock("dl-{n}")
        def locked(n: int) -> None:
            ran.append("lock")

        @once("do-{n}")
        def run_once(n: int) -> None:
            ran.append("once")

        @pooled("dp-{n}", max_size=2)
        def in_pool(n: int) -> None:
            ran.append("pooled")

        attempts: list[Callable[[], Awaitable[Any] | Any]] = [
            lambda: lock("dl").__enter__(),
            lambda: pool("dp", 2).__enter__(),
            lambda: locked(1),
            lambda: run_once(1),
            lambda: in_pool(1),
        ]
    else:

        @lock("dl-{n}")
        async def alocked(n: int) -> None:
            ran.append("lock")

        @once("do-{n}")
        async def arun_once(n: int) -> None:
            ran.append("once")

        @pooled("dp-{n}", max_size=2)
        async def ain_pool(n: int) -> None:
            ran.append("pooled")

        attempts = [
            lambda: lock("dl").__aenter__(),
            lambda: pool("dp", 2).__aenter__(),
            lambda: alocked(1),
            lambda: arun_once(1),
            lambda: ain_pool(1),
        ]
    for attempt in attempts:
        began = time.monotonic()
        with pytest.raises(CachifyBackendError) as info:
            await invoke(attempt)
        assert time.monotonic() - began < WAIT_S
        assert f"127.0.0.1:{port}" in str(info.value)
        assert not isinstance(info.value, CachifyLockError)  # not mistaken for "already locked"
    assert ran == []
    assert issubclass(CachifyBackendError, CachifyError)


@pytest.mark.parametrize("kind", KINDS)
async def test_an_unresponsive_server_is_reported_in_bounded_time(
    no_global: None, unresponsive: int, kind: str
) -> None:
    c = down_instance(unresponsive, **NO_RETRY)
    fn, calls = counting(kind)
    f = cached("slow-{a}", on_backend_error="raise")(fn)
    g = cached("slow-open-{a}")(fn)
    began = time.monotonic()
    with pytest.raises(CachifyBackendError, match="cache_get"):
        await invoke(f, 1)
    assert await invoke(g, 1) == 1
    with pytest.raises(CachifyBackendError):
        await invoke(lambda: lock("sl").__enter__() if kind == "sync" else lock("sl").__aenter__())
    assert time.monotonic() - began < 3 * WAIT_S, "never a hang"
    assert calls == [(1, 0)]
    c.sync_backend.client.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("server", ["refused", "unresponsive"])
@pytest.mark.parametrize("kind", KINDS)
async def test_down_backend_with_default_client_settings_is_bounded(
    no_global: None, unresponsive: int, kind: str, server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The client as the brief's user builds it (0.5 s socket timeouts, redis-py's other
    defaults), async twin derived: every operation ends within a few timeouts, never a hang."""
    caplog.set_level(logging.ERROR, logger="cachify")
    port = free_port() if server == "refused" else unresponsive
    down_instance(port)
    fn, calls = counting(kind)
    f = cached("dflt-{a}")(fn)
    strict = cached("dflt-strict-{a}", on_backend_error="raise")(fn)
    began = time.monotonic()
    assert await invoke(f, 3) == 3
    assert time.monotonic() - began < WAIT_S, "never a hang"
    began = time.monotonic()
    with pytest.raises(CachifyBackendError, match=f"cache_get on .*:{port}"):
        await invoke(strict, 3)
    assert time.monotonic() - began < WAIT_S, "never a hang"
    began = time.monotonic()
    with pytest.raises(CachifyBackendError, match=f"lock_acquire on .*:{port}"):
        await invoke(lambda: lock("dl").__enter__() if kind == "sync" else lock("dl").__aenter__())
    assert time.monotonic() - began < WAIT_S, "never a hang"
    assert calls == [(3, 0)]
    assert any(str(port) in m for m in error_messages(caplog))


async def test_derived_async_twin_keeps_the_sync_clients_retry_policy(no_global: None) -> None:
    """A sync client told not to retry: its derived async twin must fail as fast as it does."""
    port = free_port()
    down_instance(port, **NO_RETRY)

    @cached("twin-{a}", on_backend_error="raise")
    def f(a: int) -> int:
        return a

    @cached("twin-{a}", on_backend_error="raise")
    async def af(a: int) -> int:
        return a

    began = time.monotonic()
    with pytest.raises(CachifyBackendError):
        f(1)
    sync_s = time.monotonic() - began
    began = time.monotonic()
    with pytest.raises(CachifyBackendError):
        await af(1)
    async_s = time.monotonic() - began
    assert sync_s < 2
    assert async_s < 2, f"the async twin took {async_s:.1f}s (the sync client {sync_s:.1f}s): it retried"


@pytest.mark.parametrize("kind", KINDS)
async def test_an_outage_during_a_computation_still_returns_its_result(
    cachify: Cachify, kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The backend goes down while the function runs (after the lookup and the fill lock):
    ``on_backend_error="call"`` still hands the caller the result, and logs."""
    caplog.set_level(logging.ERROR, logger="cachify")
    backend = cachify.sync_backend if kind == "sync" else cachify.async_backend

    def go_down() -> None:
        for name in ("cache_get", "cache_set", "lock_acquire", "lock_release", "lock_extend"):

            def fail(*_args: Any, _name: str = name) -> Any:
                raise CachifyBackendError(f"{_name} on test-server failed: down")

            if inspect.iscoroutinefunction(getattr(backend, name)):

                async def afail(*args: Any, _fail: Any = fail) -> Any:
                    return _fail(*args)

                monkeypatch.setattr(backend, name, afail)
            else:
                monkeypatch.setattr(backend, name, fail)

    def body(a: int) -> int:
        go_down()
        return a * 10

    if kind == "sync":

        @cached("outage-{a}")
        def f(a: int) -> int:
            return body(a)

    else:

        @cached("outage-{a}")
        async def f(a: int) -> int:
            return body(a)

    assert await invoke(f, 4) == 40
    assert any("test-server" in m for m in error_messages(caplog))
