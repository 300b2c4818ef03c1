"""Every feature on Redis Cluster, unchanged: cached, lock, once, pool and pooled, sync and async.

Each test runs on ``cluster_cachify`` twice: built from a sync ``RedisCluster`` (asyncio twin
derived), and from a sync plus an asyncio ``RedisCluster``. Keys are chosen so that every node
of the cluster holds some (:func:`spread`), and the tests assert that the data really spans
nodes. ``BRACES`` is a key with a hash tag of its own inside it. Hand-over timings use a second
instance with ``lock_poll_interval=5``, so only the release notification can meet ``HANDOVER_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from cachify_core import (
    Cachify,
    CachifyLockError,
    CachifyLockNotOwnedError,
    CachifyPoolFullError,
    cached,
    init_cachify,
    lock,
)

from .conftest import CLUSTER_BACKENDS, async_cluster_client
from .support import WAIT_S, Worker, await_until, wait_until

pytestmark = pytest.mark.timeout(60)

#: A waiter woken by a release must get the lock or slot within this many seconds of it.
HANDOVER_S = 2.0
#: Poll interval of the instances that prove hand-over by notification.
SLOW_POLL_S = 5
#: A key with braces: the Redis hash tag of "{<prefix>user-{'a': 1}-lock}" is "<prefix>user-{'a': 1".
BRACES = "user-{'a': 1}"
#: How many candidate names :func:`spread` tries before giving up.
CANDIDATES = 1000


# -- helpers ----------------------------------------------------------------------------------
def client_of(c: Cachify) -> Any:
    """The sync ``RedisCluster`` under an instance."""
    client = c.sync_backend.client  # type: ignore[attr-defined]
    assert type(client).__name__ == "RedisCluster", type(client)
    return client


def lock_key(c: Cachify, key: str) -> str:
    return "{" + f"{c.prefix}{key}-lock" + "}"


def pool_key(c: Cachify, key: str) -> str:
    return "{" + f"{c.prefix}{key}-pool" + "}"


def spread(c: Cachify, redis_key: Callable[[str], str], per_node: int = 2) -> list[str]:
    """Names whose Redis keys land ``per_node`` on every primary of the cluster."""
    client = client_of(c)
    nodes = {n.name for n in client.get_primaries()}
    by_node: dict[str, list[str]] = {name: [] for name in nodes}
    for i in range(CANDIDATES):
        name = f"k{i}"
        picked = by_node[client.get_node_from_key(redis_key(name)).name]
        if len(picked) < per_node:
            picked.append(name)
        if all(len(v) == per_node for v in by_node.values()):
            break
    keys = [name for names in by_node.values() for name in names]
    assert_span(c, [redis_key(k) for k in keys])
    return keys


def assert_span(c: Cachify, redis_keys: Iterable[str]) -> None:
    client = client_of(c)
    nodes = {client.get_node_from_key(k).name for k in redis_keys}
    assert len(nodes) >= 2, f"keys all map to {nodes}"


def nodes_holding(c: Cachify) -> set[str]:
    """Primaries that store at least one key of this instance's prefix right now."""
    client = client_of(c)
    return {node.name for node in client.get_primaries() if client.keys(f"*{c.prefix}*", target_nodes=node)}


def pttl(c: Cachify, redis_key: str) -> int:
    return int(client_of(c).pttl(redis_key))


def waiting_flag_set(c: Cachify, redis_key: str) -> Callable[[], bool]:
    """True once a waiter has registered on ``redis_key`` (its ``:waiting`` companion exists)."""
    client = client_of(c)
    return lambda: bool(client.exists(redis_key + ":waiting"))


# -- the fixture itself -----------------------------------------------------------------------
@pytest.mark.parametrize("backend", CLUSTER_BACKENDS)
def test_backend_table_has_a_cluster_row(cachify: Cachify, backend: str) -> None:
    assert backend == "cluster"
    client_of(cachify)
    with cachify.lock("row"):
        assert cachify.lock("row").is_locked()


def test_cluster_has_several_primaries(cluster_cachify: Cachify) -> None:
    assert len(client_of(cluster_cachify).get_primaries()) >= 2


def test_async_client_only_derives_a_sync_twin(flushed_redis_cluster: list[tuple[str, int]]) -> None:
    """``init_cachify(async_client=<asyncio RedisCluster>)`` must give sync calls the same cluster."""
    async_client = async_cluster_client(flushed_redis_cluster)
    c = init_cachify(async_client=async_client, is_global=False, prefix="only-async-")

    async def hold() -> None:
        async with c.lock("shared"):
            with pytest.raises(CachifyLockError), c.lock("shared"):
                pass
        await async_client.aclose()

    asyncio.run(hold())


def test_backend_name_names_the_nodes_readably(cluster_cachify: Cachify) -> None:
    """Errors name the backend; on a cluster that should read as its nodes, not a repr dump."""
    name = cluster_cachify.sync_backend.name
    for node in client_of(cluster_cachify).get_primaries():
        assert f"{node.host}:{node.port}" in name
    assert len(name) < 300, name
    assert cluster_cachify.async_backend.name == name


# -- cached -----------------------------------------------------------------------------------
#: Cached functions per test. Their entries are placed by template (one function's entries may
#: share a node), so the tests use this many templates; all on one of 3 nodes: p < 1e-5.
CACHED_FUNCTIONS = 12
#: Arguments each cached function is called with.
CACHED_ARGS = ["a", "b", BRACES, "k0", "k1"]


def test_cached_hit_miss_reset_sync(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    calls: list[tuple[int, str]] = []

    def make(i: int) -> Any:
        @c.cached(f"item{i}-{{n}}", ttl=60)
        def load(n: str) -> tuple[int, str]:
            calls.append((i, n))
            return (i, n)

        return load

    loads = [make(i) for i in range(CACHED_FUNCTIONS)]
    expected = [(i, n) for i in range(CACHED_FUNCTIONS) for n in CACHED_ARGS]
    for i, n in expected:
        assert loads[i](n) == (i, n)  # miss
        assert loads[i](n) == (i, n)  # hit
    assert calls == expected
    assert len(nodes_holding(c)) >= 2
    for i, n in expected:
        loads[i].reset(n)
    for i, n in expected:
        assert loads[i](n) == (i, n)  # miss again
        assert loads[i](n) == (i, n)
    assert calls == expected * 2


async def test_cached_hit_miss_reset_async(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    calls: list[tuple[int, str]] = []

    def make(i: int) -> Any:
        @c.cached(f"item{i}-{{n}}", ttl=60)
        async def load(n: str) -> tuple[int, str]:
            calls.append((i, n))
            return (i, n)

        return load

    loads = [make(i) for i in range(CACHED_FUNCTIONS)]
    expected = [(i, n) for i in range(CACHED_FUNCTIONS) for n in CACHED_ARGS]
    for i, n in expected:
        assert await loads[i](n) == (i, n)
        assert await loads[i](n) == (i, n)
    assert calls == expected
    assert len(nodes_holding(c)) >= 2
    for i, n in expected:
        await loads[i].reset(n)
    for i, n in expected:
        assert await loads[i](n) == (i, n)
        assert await loads[i](n) == (i, n)
    assert calls == expected * 2


def test_cached_clear_precache_and_single_flight_sync(cluster_cachify: Cachify) -> None:
    calls: list[tuple[int, str]] = []
    gate = threading.Event()

    def make(i: int) -> Any:
        @cached(f"sf{i}-{{n}}", ttl=60, wait_timeout=WAIT_S)  # on the installed cluster instance
        def load(n: str) -> tuple[int, str]:
            calls.append((i, n))
            gate.wait(WAIT_S)
            return (i, n)

        return load

    loads = [make(i) for i in range(CACHED_FUNCTIONS)]
    # single flight: concurrent misses of one key compute once, on every node
    for i, load in enumerate(loads):
        gate.clear()
        workers = [Worker(lambda load=load: load("x")) for _ in range(4)]
        for w in workers:
            w.start()
        wait_until(lambda i=i: (i, "x") in calls)
        time.sleep(0.05)
        gate.set()
        assert [w.finish() for w in workers] == [(i, "x")] * 4
    assert calls == [(i, "x") for i in range(CACHED_FUNCTIONS)]
    assert len(nodes_holding(cluster_cachify)) >= 2
    gate.set()
    for load in loads:
        load.precache_value("p", value_to_cache="pre")
        assert load("p") == "pre"
        load.clear_cache()
        assert load("p") == (loads.index(load), "p")
        assert load("x") == (loads.index(load), "x")
    assert len(calls) == CACHED_FUNCTIONS * 3


async def test_cached_clear_precache_and_single_flight_async(cluster_cachify: Cachify) -> None:
    calls: list[tuple[int, str]] = []
    gate = asyncio.Event()

    def make(i: int) -> Any:
        @cached(f"sf{i}-{{n}}", ttl=60, wait_timeout=WAIT_S)
        async def load(n: str) -> tuple[int, str]:
            calls.append((i, n))
            await asyncio.wait_for(gate.wait(), WAIT_S)
            return (i, n)

        return load

    loads = [make(i) for i in range(CACHED_FUNCTIONS)]
    for i, load in enumerate(loads):
        gate.clear()
        tasks = [asyncio.create_task(load("x")) for _ in range(4)]
        await await_until(lambda i=i: (i, "x") in calls)
        await asyncio.sleep(0.05)
        gate.set()
        assert await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S * 2) == [(i, "x")] * 4
    assert calls == [(i, "x") for i in range(CACHED_FUNCTIONS)]
    assert len(nodes_holding(cluster_cachify)) >= 2
    for i, load in enumerate(loads):
        await load.precache_value("p", value_to_cache="pre")
        assert await load("p") == "pre"
        await load.clear_cache()
        assert await load("p") == (i, "p")
        assert await load("x") == (i, "x")
    assert len(calls) == CACHED_FUNCTIONS * 3


# -- lock: conflict, owner-checked release ----------------------------------------------------
def test_lock_conflict_and_owner_checked_release_sync(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    keys = [*spread(c, lambda k: lock_key(c, k)), BRACES]
    locks = [c.lock(k) for k in keys]
    with contextlib.ExitStack() as stack:
        for lk in locks:
            stack.enter_context(lk)
        assert len(nodes_holding(c)) >= 2
        for k in keys:
            with pytest.raises(CachifyLockError, match=r"is already locked!$"), c.lock(k):
                pass
            assert c.lock(k).is_locked()
    for k in keys:
        assert not c.lock(k).is_locked()

    client = client_of(c)
    for k in keys:
        lk = c.lock(k, exp=30)
        lk.__enter__()
        client.set(lock_key(c, k), b"someone-else")  # the lock changed hands behind our back
        with pytest.raises(CachifyLockNotOwnedError):
            lk.release()
        assert client.get(lock_key(c, k)) == b"someone-else"  # nothing was deleted
        with pytest.raises(CachifyLockNotOwnedError):
            c.lock(k).release()  # never acquired by this object
        assert c.lock(k).force_release() is True
        assert not c.lock(k).is_locked()


async def test_lock_conflict_and_owner_checked_release_async(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    keys = [*spread(c, lambda k: lock_key(c, k)), BRACES]
    async with contextlib.AsyncExitStack() as stack:
        for k in keys:
            await stack.enter_async_context(c.lock(k))
        assert len(nodes_holding(c)) >= 2
        for k in keys:
            with pytest.raises(CachifyLockError, match=r"is already locked!$"):
                async with c.lock(k):
                    pass
            assert await c.lock(k).is_alocked()
    for k in keys:
        assert not await c.lock(k).is_alocked()

    client = client_of(c)
    for k in keys:
        lk = c.lock(k, exp=30)
        await lk.__aenter__()
        client.set(lock_key(c, k), b"someone-else")
        with pytest.raises(CachifyLockNotOwnedError):
            await lk.arelease()
        assert client.get(lock_key(c, k)) == b"someone-else"
        assert await c.lock(k).aforce_release() is True
        assert not await c.lock(k).is_alocked()


# -- lock: waiting acquire woken by the release -----------------------------------------------
def test_lock_waiter_woken_by_release_sync(
    cluster_cachify: Cachify, make_cluster_cachify: Callable[..., Cachify]
) -> None:
    c = cluster_cachify
    slow = make_cluster_cachify(prefix=c.prefix, lock_poll_interval=SLOW_POLL_S)
    keys = [*spread(c, lambda k: lock_key(c, k), per_node=1), BRACES]
    for k in keys:
        acquired_at: list[float] = []

        def waiter(key: str = k, out: list[float] = acquired_at) -> None:
            with slow.lock(key, nowait=False, timeout=WAIT_S * 2):
                out.append(time.monotonic())

        with c.lock(k):
            worker = Worker(waiter)
            worker.start()
            wait_until(waiting_flag_set(c, lock_key(c, k)))
            assert acquired_at == []
            released_at = time.monotonic()
        worker.finish()
        assert len(acquired_at) == 1
        assert 0 <= acquired_at[0] - released_at < HANDOVER_S, (k, acquired_at[0] - released_at)
        assert not c.lock(k).is_locked()


async def test_lock_waiter_woken_by_release_async(
    cluster_cachify: Cachify, make_cluster_cachify: Callable[..., Cachify]
) -> None:
    c = cluster_cachify
    slow = make_cluster_cachify(prefix=c.prefix, lock_poll_interval=SLOW_POLL_S)
    keys = [*spread(c, lambda k: lock_key(c, k), per_node=1), BRACES]

    async def waiter(key: str) -> float:
        async with slow.lock(key, nowait=False, timeout=WAIT_S * 2):
            return time.monotonic()

    for k in keys:
        async with c.lock(k):
            task = asyncio.create_task(waiter(k))
            await await_until(waiting_flag_set(c, lock_key(c, k)))
            assert not task.done()
            released_at = time.monotonic()
        acquired_at = await asyncio.wait_for(task, WAIT_S * 2)
        assert 0 <= acquired_at - released_at < HANDOVER_S, (k, acquired_at - released_at)
        assert not await c.lock(k).is_alocked()


# -- lock: extend / owned / auto_renew --------------------------------------------------------
def test_lock_extend_and_owned_sync(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    keys = [*spread(c, lambda k: lock_key(c, k)), BRACES]
    for k in keys:
        lk = c.lock(k, exp=1)
        assert lk.owned() is False
        with lk:
            assert lk.owned() is True
            assert c.lock(k).owned() is False
            assert pttl(c, lock_key(c, k)) <= 1000
            lk.extend(30)
            assert 2_000 < pttl(c, lock_key(c, k)) <= 30_000
            assert lk.owned() is True
        assert lk.owned() is False
        with pytest.raises(CachifyLockNotOwnedError):
            lk.extend(5)


async def test_lock_extend_and_owned_async(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    keys = [*spread(c, lambda k: lock_key(c, k)), BRACES]
    for k in keys:
        lk = c.lock(k, exp=1)
        assert await lk.aowned() is False
        async with lk:
            assert await lk.aowned() is True
            assert await c.lock(k).aowned() is False
            await lk.aextend(30)
            assert 2_000 < pttl(c, lock_key(c, k)) <= 30_000
        assert await lk.aowned() is False
        with pytest.raises(CachifyLockNotOwnedError):
            await lk.aextend(5)


def test_lock_auto_renew_outlives_exp_sync(cluster_cachify: Cachify) -> None:
    c = cluster_cachify  # installed as the global instance: top-level `lock` uses it
    keys = [*spread(c, lambda k: lock_key(c, k), per_node=1), BRACES]
    locks = [lock(k, exp=1, auto_renew=True) for k in keys]
    with contextlib.ExitStack() as stack:
        for lk in locks:
            stack.enter_context(lk)
        time.sleep(2.5)
        for k, lk in zip(keys, locks, strict=True):
            assert lk.owned(), k
            assert 0 < pttl(c, lock_key(c, k)) <= 1000
            with pytest.raises(CachifyLockError), c.lock(k):
                pass
    for k in keys:
        assert not c.lock(k).is_locked()


async def test_lock_auto_renew_outlives_exp_async(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    keys = [*spread(c, lambda k: lock_key(c, k), per_node=1), BRACES]
    locks = [lock(k, exp=1, auto_renew=True) for k in keys]
    async with contextlib.AsyncExitStack() as stack:
        for lk in locks:
            await stack.enter_async_context(lk)
        await asyncio.sleep(2.5)
        for k, lk in zip(keys, locks, strict=True):
            assert await lk.aowned(), k
            with pytest.raises(CachifyLockError):
                async with c.lock(k):
                    pass
    for k in keys:
        assert not await c.lock(k).is_alocked()


# -- once -------------------------------------------------------------------------------------
def test_once_sync(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    names = spread(c, lambda n: lock_key(c, f"job-{n}"))
    inner: list[Any] = []

    @c.once("job-{n}", return_on_locked="busy")
    def job(n: str, depth: int = 0) -> str:
        assert job.is_locked(n)
        if depth == 0:
            inner.append(job(n, depth=1))  # overlapping call with the same key
        return f"ran {n}"

    @c.once("job-{n}", raise_on_locked=True)
    def strict(n: str) -> str:
        with pytest.raises(CachifyLockError, match=r"is already locked!$"):
            strict(n)
        return "ok"

    for n in names:
        assert job(n) == f"ran {n}"
        assert not job.is_locked(n)
        assert strict(n) == "ok"
    assert inner == ["busy"] * len(names)


async def test_once_async(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    names = spread(c, lambda n: lock_key(c, f"job-{n}"))
    started = asyncio.Event()
    release = asyncio.Event()

    @c.once("job-{n}", return_on_locked="busy")
    async def job(n: str) -> str:
        started.set()
        await asyncio.wait_for(release.wait(), WAIT_S)
        return f"ran {n}"

    for n in names:
        started.clear()
        release.clear()
        first = asyncio.create_task(job(n))
        await asyncio.wait_for(started.wait(), WAIT_S)
        assert await job.is_locked(n)
        assert await job(n) == "busy"
        release.set()
        assert await asyncio.wait_for(first, WAIT_S) == f"ran {n}"
        assert not await job.is_locked(n)


# -- pool: cap, size ---------------------------------------------------------------------------
def test_pool_cap_and_size_sync(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    keys = [*spread(c, lambda k: pool_key(c, k)), BRACES]
    with contextlib.ExitStack() as stack:
        for k in keys:
            p = c.pool(k, max_size=2)
            stack.enter_context(p)
            stack.enter_context(p)
            assert p.size() == 2
            with pytest.raises(CachifyPoolFullError, match=r"is full \(max_size=2\)$"), c.pool(k, 2):
                pass
        assert len(nodes_holding(c)) >= 2
    for k in keys:
        assert c.pool(k, 2).size() == 0


async def test_pool_cap_and_size_async(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    keys = [*spread(c, lambda k: pool_key(c, k)), BRACES]
    async with contextlib.AsyncExitStack() as stack:
        for k in keys:
            p = c.pool(k, max_size=2)
            await stack.enter_async_context(p)
            await stack.enter_async_context(p)
            assert await p.asize() == 2
            with pytest.raises(CachifyPoolFullError, match=r"is full \(max_size=2\)$"):
                async with c.pool(k, 2):
                    pass
        assert len(nodes_holding(c)) >= 2
    for k in keys:
        assert await c.pool(k, 2).asize() == 0


# -- pool: a waiter with a timeout is woken by a release --------------------------------------
def test_pool_waiter_woken_by_release_sync(
    cluster_cachify: Cachify, make_cluster_cachify: Callable[..., Cachify]
) -> None:
    c = cluster_cachify
    slow = make_cluster_cachify(prefix=c.prefix, lock_poll_interval=SLOW_POLL_S)
    keys = [*spread(c, lambda k: pool_key(c, k), per_node=1), BRACES]
    for k in keys:
        got_at: list[float] = []

        def waiter(key: str = k, out: list[float] = got_at) -> None:
            with slow.pool(key, 1, timeout=WAIT_S * 2):
                out.append(time.monotonic())

        with c.pool(k, 1):
            worker = Worker(waiter)
            worker.start()
            wait_until(waiting_flag_set(c, pool_key(c, k)))
            assert got_at == []
            released_at = time.monotonic()
        worker.finish()
        assert len(got_at) == 1
        assert 0 <= got_at[0] - released_at < HANDOVER_S, (k, got_at[0] - released_at)
        assert c.pool(k, 1).size() == 0


async def test_pool_waiter_woken_by_release_async(
    cluster_cachify: Cachify, make_cluster_cachify: Callable[..., Cachify]
) -> None:
    c = cluster_cachify
    slow = make_cluster_cachify(prefix=c.prefix, lock_poll_interval=SLOW_POLL_S)
    keys = [*spread(c, lambda k: pool_key(c, k), per_node=1), BRACES]

    async def waiter(key: str) -> float:
        async with slow.pool(key, 1, timeout=WAIT_S * 2):
            return time.monotonic()

    for k in keys:
        async with c.pool(k, 1):
            task = asyncio.create_task(waiter(k))
            await await_until(waiting_flag_set(c, pool_key(c, k)))
            assert not task.done()
            released_at = time.monotonic()
        got_at = await asyncio.wait_for(task, WAIT_S * 2)
        assert 0 <= got_at - released_at < HANDOVER_S, (k, got_at - released_at)
        assert await c.pool(k, 1).asize() == 0


# -- pooled -----------------------------------------------------------------------------------
def test_pooled_sync(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    names = spread(c, lambda n: pool_key(c, f"work-{n}"))
    inner: list[Any] = []

    @c.pooled("work-{n}", max_size=1, on_full=lambda n, depth=0: f"full {n}")
    def work(n: str, depth: int = 0) -> str:
        assert work.size(n) == 1
        if depth == 0:
            inner.append(work(n, depth=1))
        return f"done {n}"

    @c.pooled("work-{n}", max_size=1, raise_on_full=True)
    def strict(n: str) -> str:
        with pytest.raises(CachifyPoolFullError, match=r"is full \(max_size=1\)$"):
            strict(n)
        return "ok"

    for n in names:
        assert work(n) == f"done {n}"
        assert work.size(n) == 0
        assert strict(n) == "ok"
    assert inner == [f"full {n}" for n in names]


async def test_pooled_async(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    names = spread(c, lambda n: pool_key(c, f"work-{n}"))
    inner: list[Any] = []

    async def on_full(n: str, depth: int = 0) -> str:
        return f"full {n}"

    @c.pooled("work-{n}", max_size=1, on_full=on_full)
    async def work(n: str, depth: int = 0) -> str:
        assert await work.size(n) == 1
        if depth == 0:
            inner.append(await work(n, depth=1))
        return f"done {n}"

    for n in names:
        assert await work(n) == f"done {n}"
        assert await work.size(n) == 0
    assert inner == [f"full {n}" for n in names]


# -- hash tags --------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["T1-", ""])
@pytest.mark.parametrize("key", [BRACES, "{already-tagged}", "a}b", "}leading-brace", "~tilde"])
def test_keys_with_braces_lock_and_pool(
    make_cluster_cachify: Callable[..., Cachify], prefix: str, key: str
) -> None:
    """Whatever braces a key holds, with or without a prefix, a lock/pool key and its
    ``:waiting``/``:wake`` companions must share a slot, or the scripts fail (CROSSSLOT)."""
    c = make_cluster_cachify(prefix=prefix, lock_poll_interval=0.05)
    with c.lock(key), pytest.raises(CachifyLockError), c.lock(key, nowait=False, timeout=0.2):
        pass
    assert not c.lock(key).is_locked()
    with c.pool(key, 1), pytest.raises(CachifyPoolFullError), c.pool(key, 1, timeout=0.2):
        pass
    assert c.pool(key, 1).size() == 0


def test_sync_and_async_clients_share_state(cluster_cachify: Cachify) -> None:
    c = cluster_cachify
    keys = [*spread(c, lambda k: lock_key(c, k), per_node=1), BRACES]

    async def refused_while_sync_holds() -> None:
        for k in keys:
            with c.lock(k), pytest.raises(CachifyLockError):
                async with c.lock(k):
                    pass
            async with c.lock(k):
                with pytest.raises(CachifyLockError), c.lock(k):
                    pass

    asyncio.run(refused_while_sync_holds())
