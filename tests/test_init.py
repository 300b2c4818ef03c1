"""``init_cachify`` / ``Cachify``: defaults, the global instance, how clients become backends."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from cachify_core import (
    Cachify,
    CachifyInitError,
    CachifyLockError,
    CachifyPoolFullError,
    MemoryStore,
    cached,
    get_cachify,
    init_cachify,
)
from cachify_core.backends import AsyncMemoryBackend

from .storage import stored

#: A database other than the fixtures' 0, to prove a derived twin keeps the client's db.
OTHER_DB = 3
#: Namespaces ("<prefix><template>-cached") of the custom-client tests' cached functions.
SQ_NS = "C-sq-{x}-cached"
SUM_NS = "C-sum-{a}-{b}-cached"
#: A namespace for the memory store's own LRU tests.
LRU_NS = "L-lru-cached"


def prefix() -> str:
    return f"I{uuid.uuid4().hex[:8]}-"


# -- small custom clients (py-cachify's SyncClient / AsyncClient contracts) ------------------
class DictClient:
    """A dict-backed ``SyncClient``; ``set(nx=True)`` is atomic under a lock."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[Any, float | None]] = {}
        self._mutex = threading.Lock()

    def _live(self, name: str) -> tuple[Any, float | None] | None:
        entry = self._data.get(name)
        if entry is not None and entry[1] is not None and entry[1] <= time.monotonic():
            del self._data[name]
            return None
        return entry

    def get(self, name: str) -> Any | None:
        with self._mutex:
            entry = self._live(name)
            return None if entry is None else entry[0]

    def set(self, name: str, value: Any, ex: int | None = None, nx: bool = False) -> Any:
        with self._mutex:
            if nx and self._live(name) is not None:
                return None
            self._data[name] = (value, None if ex is None else time.monotonic() + ex)
            return True

    def delete(self, *names: str) -> Any:
        with self._mutex:
            return sum(self._data.pop(n, None) is not None for n in names)

    def names(self) -> list[str]:
        with self._mutex:
            return [k for k in list(self._data) if self._live(k) is not None]


class AsyncDictClient:
    """The asyncio twin of :class:`DictClient`."""

    def __init__(self) -> None:
        self.sync = DictClient()

    async def get(self, name: str) -> Any | None:
        return self.sync.get(name)

    async def set(self, name: str, value: Any, ex: int | None = None, nx: bool = False) -> Any:
        return self.sync.set(name, value, ex, nx)

    async def delete(self, *names: str) -> Any:
        return self.sync.delete(*names)


# -- defaults and the global instance -------------------------------------------------------
def test_defaults_match_py_cachify() -> None:
    c = Cachify()
    assert c.prefix == "PYC-"
    assert c.default_lock_expiration == 30
    assert c.default_cache_ttl is None
    assert c.lock_poll_interval == 0.1
    assert c.default_pool_slot_expiration == 600
    assert c.default_lock_expiration_ms == 30_000
    assert c.default_cache_ttl_ms is None
    assert c.default_pool_slot_expiration_ms == 600_000


async def test_default_backend_is_one_memory_store_for_both_twins() -> None:
    c = Cachify()
    assert isinstance(c.sync_backend, MemoryStore)
    assert isinstance(c.async_backend, AsyncMemoryBackend)
    assert c.async_backend.store is c.sync_backend

    calls: list[str] = []

    @c.cached("sum-{a}-{b}")
    def s(a: int, b: int) -> int:
        calls.append("sync")
        return a + b

    @c.cached("sum-{a}-{b}")
    async def a(a: int, b: int) -> int:
        calls.append("async")
        return a + b

    assert s(1, 2) == 3
    assert await a(1, 2) == 3
    assert calls == ["sync"]
    assert stored(c, "PYC-sum-1-2-cached") is not None


def test_each_default_instance_has_its_own_store() -> None:
    a, b = Cachify(), Cachify()
    assert a.sync_backend is not b.sync_backend


def test_settings_are_kept() -> None:
    c = Cachify(
        default_lock_expiration=None,
        default_cache_ttl=2.5,
        prefix="",
        lock_poll_interval=0.01,
        default_pool_slot_expiration=None,
    )
    assert c.default_lock_expiration_ms is None
    assert c.default_cache_ttl_ms == 2500
    assert c.prefix == ""
    assert c.lock_poll_interval == 0.01
    assert c.default_pool_slot_expiration_ms is None


def test_cachify_takes_py_cachifys_constructor_keywords() -> None:
    # py-cachify 3.1: Cachify(sync_client, async_client, prefix, default_expiration,
    # default_cache_ttl, lock_poll_interval=0.1, default_pool_slot_expiration=600)
    c = Cachify(
        sync_client=MemoryStore(),
        async_client=None,
        prefix="P-",
        default_expiration=7,
        default_cache_ttl=3,
        lock_poll_interval=0.2,
        default_pool_slot_expiration=9,
    )
    assert (c.prefix, c.default_lock_expiration, c.default_lock_expiration_ms) == ("P-", 7, 7000)
    assert (c.default_cache_ttl_ms, c.lock_poll_interval, c.default_pool_slot_expiration_ms) == (
        3000,
        0.2,
        9000,
    )
    assert Cachify(default_expiration=None).default_lock_expiration_ms is None
    with c.lock("k"), pytest.raises(CachifyLockError, match=r"^k is already locked!$"), c.lock("k"):
        pass


def test_cachify_refuses_both_expiration_names_and_py_cachifys_positional_order() -> None:
    with pytest.raises(CachifyInitError, match="not both"):
        Cachify(default_lock_expiration=5, default_expiration=5)
    with pytest.raises(CachifyInitError, match=r"takes prefix third\); pass prefix=\.\.\. by keyword"):
        Cachify(None, None, "PYC-", 30)  # type: ignore[arg-type]


def test_init_cachify_sets_the_global(no_global: None) -> None:
    c = init_cachify(prefix=prefix())
    assert isinstance(c, Cachify)
    assert get_cachify() is c

    @cached("g-{x}")
    def f(x: int) -> int:
        return x

    f(1)
    assert stored(c, f"{c.prefix}g-1-cached") is not None


def test_is_global_false_leaves_the_global_untouched(no_global: None) -> None:
    local = init_cachify(is_global=False)
    with pytest.raises(CachifyInitError):
        get_cachify()

    @local.cached("l-{x}")
    def f(x: int) -> int:
        return x

    assert f(1) == 1  # the instance works on its own
    with pytest.raises(CachifyInitError):
        get_cachify()

    first = init_cachify()
    second = init_cachify(is_global=False, prefix="LOCAL-")
    assert get_cachify() is first
    assert second is not first


def test_bad_settings_do_not_replace_the_global(no_global: None) -> None:
    good = init_cachify()
    with pytest.raises(CachifyInitError):
        init_cachify(prefix=1)  # type: ignore[arg-type]
    assert get_cachify() is good


# -- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"default_cache_ttl": -1}, id="negative-cache-ttl"),
        pytest.param({"default_cache_ttl": 0}, id="zero-cache-ttl"),
        pytest.param({"default_cache_ttl": "60"}, id="str-cache-ttl"),
        pytest.param({"default_lock_expiration": -5}, id="negative-lock-expiration"),
        pytest.param({"default_pool_slot_expiration": -0.5}, id="negative-slot-expiration"),
        pytest.param({"default_pool_slot_expiration": True}, id="bool-slot-expiration"),
        pytest.param({"lock_poll_interval": 0}, id="zero-poll"),
        pytest.param({"lock_poll_interval": -0.1}, id="negative-poll"),
        pytest.param({"lock_poll_interval": "0.1"}, id="str-poll"),
        pytest.param({"lock_poll_interval": float("nan")}, id="nan-poll"),
        pytest.param({"prefix": 123}, id="int-prefix"),
        pytest.param({"prefix": None}, id="none-prefix"),
        pytest.param({"prefix": b"PYC-"}, id="bytes-prefix"),
    ],
)
@pytest.mark.parametrize("factory", [Cachify, init_cachify])
def test_bad_settings_raise_init_error(no_global: None, factory: Any, settings: dict[str, Any]) -> None:
    with pytest.raises(CachifyInitError) as info:
        factory(**settings)
    (name,) = settings
    assert name in str(info.value)


@pytest.mark.parametrize("missing", ["get", "set", "delete"])
def test_custom_client_missing_a_method_raises_init_error(missing: str) -> None:
    class Partial:
        pass

    for method in {"get", "set", "delete"} - {missing}:
        setattr(Partial, method, lambda self, *a, **k: None)
    with pytest.raises(CachifyInitError, match=missing):
        Cachify(sync_client=Partial())
    with pytest.raises(CachifyInitError, match=missing):
        Cachify(async_client=Partial())


# -- Redis through url= and redis-py clients ------------------------------------------------
def redis_kwargs(url: str) -> dict[str, Any]:
    probe = redis.Redis.from_url(url)
    kwargs = dict(probe.connection_pool.connection_kwargs)
    probe.close()
    return kwargs


@pytest.fixture
def other_db(flushed_redis_url: str) -> Iterator[redis.Redis]:
    """A raw client on database ``OTHER_DB`` of the test server, flushed around the test."""
    client = redis.Redis(
        connection_pool=redis.ConnectionPool(**{**redis_kwargs(flushed_redis_url), "db": OTHER_DB})
    )
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


def sync_and_async_sum(c: Cachify, calls: list[str]) -> tuple[Any, Any]:
    @c.cached("sum-{a}-{b}")
    def s(a: int, b: int) -> int:
        calls.append("sync")
        return a + b

    @c.cached("sum-{a}-{b}")
    async def a(a: int, b: int) -> int:
        calls.append("async")
        return a + b

    return s, a


async def test_url_builds_sync_and_async_clients_sharing_data(flushed_redis_url: str) -> None:
    p = prefix()
    c = init_cachify(url=flushed_redis_url, prefix=p, is_global=False)
    calls: list[str] = []
    s, a = sync_and_async_sum(c, calls)

    assert s(1, 2) == 3
    assert await a(1, 2) == 3  # seen from the async side
    assert await a(3, 4) == 7
    assert s(3, 4) == 7  # and the other way round
    assert calls == ["sync", "async"]

    # both entries are on the server, whichever twin wrote them: read them back via Redis
    reader = init_cachify(url=flushed_redis_url, prefix=p, is_global=False)
    assert stored(reader, f"{p}sum-1-2-cached") is not None
    assert stored(reader, f"{p}sum-3-4-cached") is not None


async def test_two_instances_on_one_url_share_by_prefix(flushed_redis_url: str) -> None:
    p = prefix()
    one = init_cachify(url=flushed_redis_url, prefix=p, is_global=False)
    two = init_cachify(url=flushed_redis_url, prefix=p, is_global=False)
    calls: list[str] = []
    s, _ = sync_and_async_sum(one, calls)
    _, a = sync_and_async_sum(two, calls)
    s(1, 1)
    assert await a(1, 1) == 2
    assert calls == ["sync"]


async def test_sync_redis_client_alone_derives_an_async_twin_on_the_same_server(
    flushed_redis_url: str, other_db: redis.Redis
) -> None:
    client = redis.Redis(
        connection_pool=redis.ConnectionPool(**{**redis_kwargs(flushed_redis_url), "db": OTHER_DB})
    )
    p = prefix()
    c = init_cachify(sync_client=client, prefix=p, is_global=False)
    calls: list[str] = []
    s, a = sync_and_async_sum(c, calls)

    assert await a(1, 2) == 3  # written by the derived async client
    assert s(1, 2) == 3  # read by the user's sync client
    assert calls == ["async"]
    # on the client's database, not db 0
    assert stored(Cachify(sync_client=other_db, prefix=p), f"{p}sum-1-2-cached") is not None
    assert stored(Cachify(url=flushed_redis_url, prefix=p), f"{p}sum-1-2-cached") is None

    # Locks are shared too: an async holder blocks a sync taker.
    async with c.lock("shared-lock"):
        with pytest.raises(CachifyLockError), c.lock("shared-lock"):
            pass
    client.close()


async def test_async_redis_client_alone_derives_a_sync_twin_on_the_same_server(
    flushed_redis_url: str, other_db: redis.Redis
) -> None:
    client = aredis.Redis(
        connection_pool=aredis.ConnectionPool(**{**redis_kwargs(flushed_redis_url), "db": OTHER_DB})
    )
    p = prefix()
    try:
        c = init_cachify(async_client=client, prefix=p, is_global=False)
        calls: list[str] = []
        s, a = sync_and_async_sum(c, calls)

        assert s(1, 2) == 3  # written by the derived sync client
        assert await a(1, 2) == 3  # read by the user's async client
        assert calls == ["sync"]
        assert stored(Cachify(sync_client=other_db, prefix=p), f"{p}sum-1-2-cached") is not None
        assert stored(Cachify(url=flushed_redis_url, prefix=p), f"{p}sum-1-2-cached") is None

        with c.lock("shared-lock"), pytest.raises(CachifyLockError):
            async with c.lock("shared-lock"):
                pass
    finally:
        await client.aclose()


async def test_both_redis_clients_given(flushed_redis_url: str) -> None:
    sync_client = redis.Redis.from_url(flushed_redis_url)
    async_client = aredis.Redis.from_url(flushed_redis_url)
    try:
        c = init_cachify(sync_client=sync_client, async_client=async_client, prefix=prefix(), is_global=False)
        calls: list[str] = []
        s, a = sync_and_async_sum(c, calls)
        s(2, 2)
        assert await a(2, 2) == 4
        assert calls == ["sync"]
    finally:
        sync_client.close()
        await async_client.aclose()


@pytest.mark.parametrize("side", ["sync", "async"])
async def test_decode_responses_client_is_rejected(flushed_redis_url: str, side: str) -> None:
    if side == "sync":
        client: Any = redis.Redis.from_url(flushed_redis_url, decode_responses=True)
        kwargs = {"sync_client": client}
    else:
        client = aredis.Redis.from_url(flushed_redis_url, decode_responses=True)
        kwargs = {"async_client": client}
    try:
        with pytest.raises(CachifyInitError, match="decode_responses"):
            init_cachify(is_global=False, **kwargs)
    finally:
        if side == "sync":
            client.close()
        else:
            await client.aclose()


@pytest.mark.parametrize("which", ["sync_client", "async_client", "memory_store"])
async def test_url_with_a_client_is_rejected(no_global: None, flushed_redis_url: str, which: str) -> None:
    sync_client = redis.Redis.from_url(flushed_redis_url)
    async_client = aredis.Redis.from_url(flushed_redis_url)
    given = {
        "sync_client": {"sync_client": sync_client},
        "async_client": {"async_client": async_client},
        "memory_store": {"sync_client": MemoryStore()},
    }[which]
    try:
        with pytest.raises(CachifyInitError, match="url"):
            init_cachify(url=flushed_redis_url, **given)
        with pytest.raises(CachifyInitError):
            get_cachify()  # nothing was installed
    finally:
        sync_client.close()
        await async_client.aclose()


def test_async_url_client_works_across_asyncio_run_calls(flushed_redis_url: str) -> None:
    c = init_cachify(url=flushed_redis_url, prefix=prefix(), is_global=False)
    calls: list[int] = []

    @c.cached("loop-{x}")
    async def f(x: int) -> int:
        calls.append(x)
        return x * 2

    async def hold_lock() -> bool:
        async with c.lock("loop-lock"):
            return await c.lock("loop-lock").is_alocked()

    assert asyncio.run(f(1)) == 2
    assert asyncio.run(f(1)) == 2  # a new loop: a new client, same server
    assert asyncio.run(f(2)) == 4
    assert asyncio.run(hold_lock()) is True
    assert asyncio.run(hold_lock()) is True
    assert calls == [1, 2]


def test_derived_async_twin_works_across_asyncio_run_calls_and_threads(flushed_redis_url: str) -> None:
    client = redis.Redis.from_url(flushed_redis_url)
    c = init_cachify(sync_client=client, prefix=prefix(), is_global=False)
    calls: list[int] = []

    @c.cached("loop-{x}")
    async def f(x: int) -> int:
        calls.append(x)
        return x + 1

    assert asyncio.run(f(1)) == 2
    assert asyncio.run(f(1)) == 2

    results: list[int] = []
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            results.append(asyncio.run(f(1)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=in_thread) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert results == [2, 2, 2]
    assert calls == [1]
    client.close()


# -- custom clients -------------------------------------------------------------------------
def test_custom_sync_client_backs_every_feature() -> None:
    store = DictClient()
    c = init_cachify(sync_client=store, prefix="C-", is_global=False, lock_poll_interval=0.01)
    calls: list[int] = []

    @c.cached("sq-{x}")
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert square(3) == 9
    assert square(3) == 9
    assert calls == [3]
    assert f"{SQ_NS}:sq-3-cached" in store.names()
    assert f"{SQ_NS}:meta" not in store.names()  # never cleared: the generation is implicit
    square.reset(3)
    assert square(3) == 9
    assert calls == [3, 3]

    # lock
    lk = c.lock("res")
    with lk:
        assert lk.is_locked()
        with pytest.raises(CachifyLockError, match="res is already locked!"), c.lock("res"):
            pass
    assert not lk.is_locked()
    with c.lock("res"):  # free again
        pass

    # once: a nested call while the first runs is skipped
    inner_results: list[Any] = []

    @c.once("job-{n}", return_on_locked="skipped")
    def job(n: int, nested: bool) -> str:
        if nested:
            inner_results.append(job(n, nested=False))
        return "ran"

    assert job(1, nested=True) == "ran"
    assert inner_results == ["skipped"]
    assert job(1, nested=False) == "ran"  # released afterwards

    # pool
    p = c.pool("slots", max_size=2)
    with p, p:
        assert p.size() == 2
        with pytest.raises(CachifyPoolFullError, match=r"slots is full \(max_size=2\)"), p:
            pass
    assert p.size() == 0

    # pooled
    @c.pooled("worker", max_size=1, on_full=lambda depth: "full")
    def worker(depth: int) -> str:
        return worker(depth - 1) if depth else "done"

    assert worker(1) == "full"
    assert worker(0) == "done"


async def test_async_use_of_a_sync_only_custom_client_shares_its_store() -> None:
    store = DictClient()
    c = init_cachify(sync_client=store, prefix="C-", is_global=False, lock_poll_interval=0.01)
    calls: list[str] = []
    s, a = sync_and_async_sum(c, calls)

    assert s(1, 2) == 3
    assert await a(1, 2) == 3
    assert await a(5, 5) == 10
    assert s(5, 5) == 10
    assert calls == ["sync", "async"]
    assert sorted(store.names()) == [f"{SUM_NS}:sum-1-2-cached", f"{SUM_NS}:sum-5-5-cached"]
    await a.reset(1, 2)
    assert store.get(f"{SUM_NS}:sum-1-2-cached") is None
    assert store.get(f"{SUM_NS}:sum-5-5-cached") is not None
    # clear_cache moves the namespace's generation on: one "<ns>:meta" key, no scan or deletes
    await a.clear_cache()
    assert store.get(f"{SUM_NS}:meta") is not None
    assert sorted(store.names()) == [f"{SUM_NS}:meta", f"{SUM_NS}:sum-5-5-cached"]
    assert s(5, 5) == 10
    assert calls == ["sync", "async", "sync"]  # the surviving key is of an old generation: a miss

    # Sync and async locks and pools see each other.
    with c.lock("mixed"), pytest.raises(CachifyLockError):
        async with c.lock("mixed"):
            pass
    async with c.lock("mixed"):
        assert c.lock("mixed").is_locked()
    p = c.pool("mixed-pool", max_size=1)
    with p:
        with pytest.raises(CachifyPoolFullError):
            async with p:
                pass
        assert await p.asize() == 1
    assert await p.asize() == 0


async def test_custom_async_only_client_works_from_async_code() -> None:
    client = AsyncDictClient()
    c = init_cachify(async_client=client, prefix="A-", is_global=False)
    calls: list[int] = []

    @c.cached("sq-{x}")
    async def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert await square(4) == 16
    assert await square(4) == 16
    assert calls == [4]
    assert client.sync.get("A-sq-{x}-cached:sq-4-cached") is not None
    async with c.lock("alock"):
        with pytest.raises(CachifyLockError):
            async with c.lock("alock"):
                pass


def test_custom_async_only_client_used_from_sync_code_raises() -> None:
    c = init_cachify(async_client=AsyncDictClient(), is_global=False)

    @c.cached("sq-{x}")
    def square(x: int) -> int:
        return x * x

    with pytest.raises(CachifyInitError) as info:
        square(2)
    message = str(info.value)
    assert "async client" in message
    assert "sync_client" in message
    with pytest.raises(CachifyInitError, match="sync_client"), c.lock("x"):
        pass
    with pytest.raises(CachifyInitError, match="sync_client"), c.pool("p", max_size=1):
        pass


def test_memory_store_can_be_passed_and_is_shared() -> None:
    store = MemoryStore()
    a = Cachify(sync_client=store, prefix="X-")
    b = Cachify(async_client=store, prefix="X-")
    assert a.sync_backend is store
    assert b.sync_backend is store

    @a.cached("m-{x}")
    def f(x: int) -> int:
        return x

    f(1)
    assert stored(b, "X-m-1-cached") is not None


# -- the memory store's bounds --------------------------------------------------------------
def test_memory_store_evicts_least_recently_used_entries() -> None:
    store = MemoryStore(max_entries=3)
    for name in "abc":
        assert store.cache_set(LRU_NS, name, name.encode(), None, "0")
    assert store.cache_get(LRU_NS, "a").value == b"a"  # a is now the most recently used
    assert store.cache_set(LRU_NS, "d", b"d", None, "0")
    assert store.cache_get(LRU_NS, "b").value is None
    assert [store.cache_get(LRU_NS, k).value for k in "acd"] == [b"a", b"c", b"d"]
    assert len(store) == 3


def test_memory_store_overwrite_does_not_evict() -> None:
    store = MemoryStore(max_entries=3)
    for name in "abc":
        assert store.cache_set(LRU_NS, name, name.encode(), None, "0")
    # an update: nothing is evicted, a becomes the most recent
    assert store.cache_set(LRU_NS, "a", b"A", None, "0")
    assert len(store) == 3
    assert store.cache_set(LRU_NS, "d", b"d", None, "0")  # b is now the least recently used
    assert store.cache_get(LRU_NS, "b").value is None
    assert [store.cache_get(LRU_NS, k).value for k in "acd"] == [b"A", b"c", b"d"]


def test_memory_store_lru_spans_namespaces() -> None:
    """The bound is on the store, not per namespace: entries of every function count."""
    store = MemoryStore(max_entries=3)
    for ns in ("n1", "n2", "n3"):
        assert store.cache_set(ns, "k", ns.encode(), None, "0")
    assert store.cache_get("n1", "k").value == b"n1"
    assert store.cache_set("n4", "k", b"n4", None, "0")
    assert store.cache_get("n2", "k").value is None
    assert [store.cache_get(ns, "k").value for ns in ("n1", "n3", "n4")] == [b"n1", b"n3", b"n4"]
    assert len(store) == 3


def test_memory_store_never_evicts_held_locks_or_pool_slots() -> None:
    store = MemoryStore(max_entries=3)
    c = Cachify(sync_client=store, prefix="B-")
    calls: list[int] = []

    @c.cached("e-{x}")
    def f(x: int) -> int:
        calls.append(x)
        return x

    p = c.pool("bounded", max_size=1)
    with c.lock("held", exp=None), p:
        for x in range(20):
            f(x)
        assert len(store) == 3
        assert c.lock("held").is_locked()
        with pytest.raises(CachifyLockError), c.lock("held"):
            pass
        assert p.size() == 1
        with pytest.raises(CachifyPoolFullError), p:
            pass
    # the cache itself is LRU: the last three entries are hits, the first is a miss
    for x in (17, 18, 19, 0):
        f(x)
    assert calls == [*range(20), 0]


@pytest.mark.parametrize("max_entries", [0, -1, 1.5, "3"])
def test_memory_store_rejects_bad_bounds(max_entries: Any) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryStore(max_entries=max_entries)
