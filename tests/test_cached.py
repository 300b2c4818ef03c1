"""``@cached`` on every backend, sync and async, through the global and the instance API.

TTL checks use large TTLs and look at what the backend stores (Redis ``PTTL``; the memory
backend under a fake clock), so they need no sleeping; one test per flavour waits for a real
short expiry with a bounded poll.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from cachify_core import Cachify, CachifyInitError, MemoryStore, cached, init_cachify
from cachify_core import instance as instance_module
from cachify_core.backends import memory as memory_module

from .storage import redis_key, stored
from .support import KINDS, counting, invoke

VIAS = ["global", "instance"]

NOT_INITIALIZED = "Cachify is not initialized, did you forget to call `init_cachify`?"


# -- helpers --------------------------------------------------------------------------------
def decorator_for(via: str, c: Cachify) -> Callable[..., Any]:
    """``cached`` (global, which the ``cachify`` fixture points at ``c``) or ``c.cached``."""
    return cached if via == "global" else c.cached


class Clock:
    """Fake monotonic clock for the memory backend; Redis TTLs are read with PTTL instead."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 10_000.0
        monkeypatch.setattr(memory_module, "_now", lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def assert_ttl(backend: str, c: Cachify, clock: Clock, full_key: str, ttl_s: float | None) -> None:
    """The entry under ``full_key`` expires after about ``ttl_s`` seconds (``None``: never)."""
    assert stored(c, full_key) is not None, f"{full_key} is not stored"
    if backend == "redis":
        pttl = c.sync_backend.client.pttl(redis_key(c, full_key))  # type: ignore[attr-defined]
        if ttl_s is None:
            assert pttl == -1, f"{full_key} expires in {pttl} ms, expected never"
        else:
            # Large TTLs only: the bounds hold however slow the machine is.
            assert ttl_s * 1000 * 0.5 < pttl <= ttl_s * 1000, f"{full_key} PTTL {pttl} ms, expected {ttl_s} s"
        return
    if ttl_s is None:
        clock.advance(10**8)
        assert stored(c, full_key) is not None, f"{full_key} expired, expected never"
        return
    clock.advance(ttl_s * 0.9)
    assert stored(c, full_key) is not None, f"{full_key} expired before {ttl_s * 0.9} s"
    clock.advance(ttl_s * 0.2)
    assert stored(c, full_key) is None, f"{full_key} still there after {ttl_s * 1.1} s"


# -- hits, misses, values -------------------------------------------------------------------
@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("kind", KINDS)
async def test_hit_skips_the_call(cachify: Cachify, kind: str, via: str) -> None:
    fn, calls = counting(kind)
    wrapped = decorator_for(via, cachify)("sum-{a}-{b}")(fn)

    assert await invoke(wrapped, 1, 2) == 3
    assert await invoke(wrapped, 1, 2) == 3
    assert await invoke(wrapped, 1, b=2) == 3
    assert await invoke(wrapped, a=1, b=2) == 3
    assert calls == [(1, 2)]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("kind", KINDS)
async def test_different_args_make_different_entries(cachify: Cachify, kind: str, via: str) -> None:
    fn, calls = counting(kind)
    wrapped = decorator_for(via, cachify)("sum-{a}-{b}")(fn)

    assert await invoke(wrapped, 1, 2) == 3
    assert await invoke(wrapped, 2, 1) == 3
    assert await invoke(wrapped, 1) == 1
    assert await invoke(wrapped, 1, 2) == 3
    assert await invoke(wrapped, 2, 1) == 3
    assert await invoke(wrapped, 1, 0) == 1  # same as the default
    assert calls == [(1, 2), (2, 1), (1, 0)]


@pytest.mark.parametrize("kind", KINDS)
async def test_entry_is_stored_under_the_py_cachify_key(cachify: Cachify, kind: str) -> None:
    fn, _calls = counting(kind)
    wrapped = cached("sum-{a}-{b}")(fn)

    await invoke(wrapped, 4, 5)
    assert stored(cachify, f"{cachify.prefix}sum-4-5-cached") is not None
    assert stored(cachify, f"{cachify.prefix}sum-5-4-cached") is None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("value", [None, 0, "", False, [], {}], ids=repr)
async def test_none_and_falsy_results_are_cached(cachify: Cachify, kind: str, value: Any) -> None:
    fn, calls = counting(kind, lambda a, b: value)
    wrapped = cached("v-{a}")(fn)

    assert await invoke(wrapped, 1) == value
    second = await invoke(wrapped, 1)
    assert second == value
    assert type(second) is type(value)
    assert calls == [(1, 0)]


@pytest.mark.parametrize("kind", KINDS)
async def test_values_round_trip(cachify: Cachify, kind: str) -> None:
    value = {"nested": [1, 2.5, ("t", None)], "b": b"\x00\xff"}
    fn, calls = counting(kind, lambda a, b: value)
    wrapped = cached("v-{a}")(fn)

    assert await invoke(wrapped, 1) == value
    assert await invoke(wrapped, 1) == value
    assert len(calls) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_exceptions_are_not_cached(cachify: Cachify, kind: str) -> None:
    attempts: list[int] = []

    def body(a: int, b: int) -> int:
        attempts.append(a)
        if len(attempts) == 1:
            raise RuntimeError("transient")
        return a * 10

    fn, _calls = counting(kind, body)
    wrapped = cached("e-{a}")(fn)

    with pytest.raises(RuntimeError, match="transient"):
        await invoke(wrapped, 1)
    assert stored(cachify, f"{cachify.prefix}e-1-cached") is None
    assert await invoke(wrapped, 1) == 10
    assert await invoke(wrapped, 1) == 10
    assert attempts == [1, 1]


@pytest.mark.parametrize("kind", KINDS)
async def test_metadata_is_kept(cachify: Cachify, kind: str) -> None:
    fn, _ = counting(kind)
    wrapped = cached("m-{a}")(fn)
    assert wrapped.__wrapped__ is fn
    assert wrapped.__name__ == fn.__name__
    assert inspect.iscoroutinefunction(wrapped) == (kind == "async")
    assert inspect.iscoroutinefunction(wrapped.reset) == (kind == "async")


async def test_cached_method(cachify: Cachify) -> None:
    calls: list[tuple[str, int]] = []

    class Repo:
        def __init__(self, name: str) -> None:
            self.name = name

        @cached("repo-{self.name}-{item_id}")
        def load(self, item_id: int) -> str:
            calls.append((self.name, item_id))
            return f"{self.name}:{item_id}"

        @cached("arepo-{self.name}-{item_id}")
        async def aload(self, item_id: int) -> str:
            calls.append((self.name, -item_id))
            return f"{self.name}:{item_id}"

    users, orders = Repo("users"), Repo("orders")
    assert users.load(1) == "users:1"
    assert orders.load(1) == "orders:1"
    assert Repo("users").load(1) == "users:1"
    assert await users.aload(2) == "users:2"
    assert await Repo("users").aload(2) == "users:2"
    assert calls == [("users", 1), ("orders", 1), ("users", -2)]


async def test_sync_and_async_functions_share_entries(cachify: Cachify) -> None:
    sync_fn, sync_calls = counting("sync")
    async_fn, async_calls = counting("async")
    s = cached("shared-{a}-{b}")(sync_fn)
    a = cached("shared-{a}-{b}")(async_fn)

    assert s(1, 2) == 3
    assert await a(1, 2) == 3
    assert await a(3, 4) == 7
    assert s(3, 4) == 7
    assert sync_calls == [(1, 2)]
    assert async_calls == [(3, 4)]


# -- TTL precedence -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("default_ttl", "decorator_kwargs", "expected_ttl"),
    [
        pytest.param(30, {"ttl": 3600}, 3600, id="explicit-longer-than-default-wins"),
        pytest.param(3600, {"ttl": 30}, 30, id="explicit-shorter-than-default-wins"),
        pytest.param(None, {"ttl": 30}, 30, id="explicit-without-default"),
        pytest.param(30, {"ttl": None}, None, id="ttl-none-never-expires-despite-default"),
        pytest.param(30, {}, 30, id="omitted-uses-default"),
        pytest.param(None, {}, None, id="both-omitted-never-expires"),
        pytest.param(None, {"ttl": None}, None, id="both-none"),
    ],
)
@pytest.mark.parametrize("via", VIAS)
async def test_ttl_precedence(
    backend: str,
    make_cachify: Callable[..., Cachify],
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    via: str,
    kind: str,
    default_ttl: float | None,
    decorator_kwargs: dict[str, Any],
    expected_ttl: float | None,
) -> None:
    c = make_cachify(default_cache_ttl=default_ttl)
    if via == "global":
        monkeypatch.setattr(instance_module, "_global", c)
    fn, calls = counting(kind)
    wrapped = decorator_for(via, c)("ttl-{a}", **decorator_kwargs)(fn)

    assert await invoke(wrapped, 1) == 1
    assert_ttl(backend, c, clock, f"{c.prefix}ttl-1-cached", expected_ttl)
    if backend == "memory":  # the fake clock has now moved past the TTL, if there is one
        assert await invoke(wrapped, 1) == 1
        assert len(calls) == (1 if expected_ttl is None else 2)


@pytest.mark.parametrize("kind", KINDS)
async def test_default_ttl_is_read_from_the_instance_at_call_time(
    backend: str, make_cachify: Callable[..., Cachify], clock: Clock, kind: str
) -> None:
    # The same decorator object applied under two instances with different defaults.
    short, never = make_cachify(default_cache_ttl=30), make_cachify(default_cache_ttl=None)
    fn, _ = counting(kind)
    f_short = short.cached("d-{a}")(fn)
    f_never = never.cached("d-{a}")(fn)
    await invoke(f_short, 1)
    await invoke(f_never, 1)
    assert_ttl(backend, never, clock, f"{never.prefix}d-1-cached", None)
    if backend == "redis":
        assert_ttl(backend, short, clock, f"{short.prefix}d-1-cached", 30)
    else:  # the clock has moved 10**8 s: the short entry is gone, the other is not
        assert stored(short, f"{short.prefix}d-1-cached") is None


@pytest.mark.parametrize("kind", KINDS)
async def test_real_short_ttl_expires(cachify: Cachify, kind: str) -> None:
    fn, calls = counting(kind)
    wrapped = cached("short-{a}", ttl=0.2)(fn)

    assert await invoke(wrapped, 1) == 1
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        assert await invoke(wrapped, 1) == 1
    assert len(calls) == 2, "the entry did not expire within 5 s of a 0.2 s TTL"


@pytest.mark.parametrize("ttl", [0, -1, "10", True])
def test_invalid_ttl_is_rejected_at_decoration(no_global: None, ttl: Any) -> None:
    with pytest.raises(ValueError, match="ttl"):
        cached("k", ttl=ttl)


# -- enc_dec --------------------------------------------------------------------------------
@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("kind", KINDS)
async def test_enc_dec_is_applied(cachify: Cachify, kind: str, via: str) -> None:
    # The documented example: encoder x2 on store, decoder x3 on read.
    fn, calls = counting(kind)
    wrapped = decorator_for(via, cachify)("sum_two-{a}-{b}", enc_dec=(lambda v: v * 2, lambda v: v * 3))(fn)

    assert await invoke(wrapped, 5, 5) == 10
    assert await invoke(wrapped, 5, 5) == 60
    assert await invoke(wrapped, 5, 5) == 60
    assert calls == [(5, 5)]


async def test_enc_dec_makes_unpicklable_values_cacheable(cachify: Cachify) -> None:
    class Unpicklable:
        def __init__(self, n: int) -> None:
            self.n = n
            self.fn = lambda: n  # lambdas do not pickle

    calls: list[int] = []

    @cached("u-{n}", enc_dec=(lambda v: v.n, Unpicklable))
    def make(n: int) -> Unpicklable:
        calls.append(n)
        return Unpicklable(n)

    assert make(3).n == 3
    assert make(3).n == 3
    assert calls == [3]


@pytest.mark.parametrize("enc_dec", [(str,), [str, str], (str, 1), "ab"])
def test_invalid_enc_dec_is_rejected(no_global: None, enc_dec: Any) -> None:
    with pytest.raises(TypeError, match="enc_dec"):
        cached("k", enc_dec=enc_dec)


# -- reset ----------------------------------------------------------------------------------
@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("kind", KINDS)
async def test_reset_clears_only_the_given_arguments(cachify: Cachify, kind: str, via: str) -> None:
    fn, calls = counting(kind)
    wrapped = decorator_for(via, cachify)("sum-{a}-{b}")(fn)

    await invoke(wrapped, 1, 2)
    await invoke(wrapped, 3, 4)
    assert await invoke(wrapped.reset, 1, 2) is None
    await invoke(wrapped, 1, 2)  # recomputed
    await invoke(wrapped, 3, 4)  # still cached
    assert calls == [(1, 2), (3, 4), (1, 2)]


@pytest.mark.parametrize("kind", KINDS)
async def test_reset_binds_arguments_like_the_call(cachify: Cachify, kind: str) -> None:
    fn, calls = counting(kind)
    wrapped = cached("sum-{a}-{b}")(fn)

    await invoke(wrapped, 1)  # b defaults to 0
    await invoke(wrapped.reset, a=1, b=0)
    await invoke(wrapped, 1, 0)
    await invoke(wrapped.reset, 1)
    await invoke(wrapped, a=1)
    assert calls == [(1, 0), (1, 0), (1, 0)]


@pytest.mark.parametrize("kind", KINDS)
async def test_reset_of_a_missing_entry_is_harmless(cachify: Cachify, kind: str) -> None:
    fn, calls = counting(kind)
    wrapped = cached("sum-{a}-{b}")(fn)
    await invoke(wrapped.reset, 9, 9)
    assert await invoke(wrapped, 9, 9) == 18
    assert calls == [(9, 9)]


@pytest.mark.parametrize("kind", KINDS)
async def test_multi_layer_reset_clears_both_layers(
    cachify: Cachify, make_cachify: Callable[..., Cachify], kind: str
) -> None:
    local = make_cachify(prefix=f"L1-{uuid.uuid4().hex[:6]}-")
    fn, calls = counting(kind)
    inner = cached("l2-{a}-{b}", ttl=60)(fn)  # the global instance
    outer = local.cached("l1-{a}-{b}", ttl=5)(inner)

    assert await invoke(outer, 2, 3) == 5
    assert await invoke(outer, 2, 3) == 5
    assert calls == [(2, 3)]
    assert stored(local, f"{local.prefix}l1-2-3-cached") is not None
    assert stored(cachify, f"{cachify.prefix}l2-2-3-cached") is not None

    # Resetting only the inner layer leaves the outer one answering.
    await invoke(inner.reset, 2, 3)
    assert await invoke(outer, 2, 3) == 5
    assert calls == [(2, 3)]

    # The outer reset clears both: the function runs again.
    await invoke(outer.reset, a=2, b=3)
    assert stored(local, f"{local.prefix}l1-2-3-cached") is None
    assert stored(cachify, f"{cachify.prefix}l2-2-3-cached") is None
    assert await invoke(outer, 2, 3) == 5
    assert calls == [(2, 3), (2, 3)]


@pytest.mark.parametrize("kind", KINDS)
async def test_outer_reset_clears_inner_layer_even_if_outer_is_empty(
    cachify: Cachify, make_cachify: Callable[..., Cachify], kind: str
) -> None:
    local = make_cachify(prefix=f"L1-{uuid.uuid4().hex[:6]}-")
    fn, calls = counting(kind)
    inner = cached("l2-{a}")(fn)
    outer = local.cached("l1-{a}")(inner)

    await invoke(inner, 1)  # only the inner layer has an entry
    await invoke(outer.reset, 1)
    await invoke(outer, 1)
    assert calls == [(1, 0), (1, 0)]


# -- instances and the global ---------------------------------------------------------------
def pair(
    backend: str, make_cachify: Callable[..., Cachify], prefix_a: str, prefix_b: str
) -> tuple[Cachify, Cachify]:
    """Two instances on the same store (memory) or server (Redis)."""
    if backend == "memory":
        store = MemoryStore()
        return make_cachify(prefix=prefix_a, sync_client=store), make_cachify(
            prefix=prefix_b, sync_client=store
        )
    return make_cachify(prefix=prefix_a), make_cachify(prefix=prefix_b)


@pytest.mark.parametrize("kind", KINDS)
async def test_instances_with_different_prefixes_are_isolated(
    backend: str, make_cachify: Callable[..., Cachify], kind: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    a, b = pair(backend, make_cachify, f"A{tag}-", f"B{tag}-")
    fn, calls = counting(kind)
    fa, fb = a.cached("iso-{a}")(fn), b.cached("iso-{a}")(fn)

    await invoke(fa, 1)
    await invoke(fb, 1)
    assert calls == [(1, 0), (1, 0)]
    await invoke(fa.reset, 1)
    await invoke(fb, 1)  # b's entry survives a's reset
    assert calls == [(1, 0), (1, 0)]


@pytest.mark.parametrize("kind", KINDS)
async def test_instances_with_the_same_prefix_on_one_store_share_entries(
    backend: str, make_cachify: Callable[..., Cachify], kind: str
) -> None:
    # The control for the isolation test above: the prefix, not the instance, separates.
    prefix = f"S{uuid.uuid4().hex[:6]}-"
    a, b = pair(backend, make_cachify, prefix, prefix)
    fn, calls = counting(kind)
    await invoke(a.cached("iso-{a}")(fn), 1)
    await invoke(b.cached("iso-{a}")(fn), 1)
    assert calls == [(1, 0)]


@pytest.mark.parametrize("kind", KINDS)
async def test_instance_decorators_do_not_need_the_global(
    no_global: None, make_cachify: Callable[..., Cachify], kind: str
) -> None:
    c = make_cachify()
    fn, calls = counting(kind)
    wrapped = c.cached("ng-{a}")(fn)
    await invoke(wrapped, 1)
    await invoke(wrapped, 1)
    await invoke(wrapped.reset, 1)
    assert calls == [(1, 0)]


@pytest.mark.parametrize("kind", KINDS)
async def test_global_cached_without_init_raises(no_global: None, kind: str) -> None:
    fn, calls = counting(kind)
    wrapped = cached("g-{a}")(fn)  # decorating needs no instance

    with pytest.raises(CachifyInitError) as info:
        await invoke(wrapped, 1)
    assert str(info.value) == NOT_INITIALIZED
    with pytest.raises(CachifyInitError) as info:
        await invoke(wrapped.reset, 1)
    assert str(info.value) == NOT_INITIALIZED
    assert calls == []

    # Initializing later makes the already-decorated function work.
    init_cachify()
    assert await invoke(wrapped, 1) == 1
    assert await invoke(wrapped, 1) == 1
    assert calls == [(1, 0)]


async def test_global_cached_follows_reinitialization(no_global: None) -> None:
    fn, calls = counting("sync")
    wrapped = cached("r-{a}")(fn)
    init_cachify()
    wrapped(1)
    init_cachify()  # a fresh in-memory store: the old entry is not visible
    wrapped(1)
    assert calls == [(1, 0), (1, 0)]
