"""``rate_limit`` and ``@rate_limited``: GCRA limits per key, on every backend (and the cluster row).

Where a test must let time pass it sleeps the ``retry_after_s`` the backend reported (never a
guessed duration), and its rates are high ("20/s" and up) so the sleeps are tens of
milliseconds. Timing assertions are lower bounds only: a limiter may not admit sooner than its
rate allows, however slow the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import pickle
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from cachify_core import (
    Cachify,
    CachifyInitError,
    CachifyKeyError,
    CachifyRateLimitedError,
    Rate,
    init_cachify,
    parse_rate,
    rate_limit,
    rate_limited,
)
from cachify_core.backends import MemoryStore
from cachify_core.backends import memory as memory_module

from . import mp_workers_rate
from .conftest import WITH_CLUSTER
from .support import CTX, WAIT_S, join_all, start_all, started, wait_until
from .test_init import AsyncDictClient, DictClient
from .windows import certain_peak


def limited(fn: Callable[[], Any]) -> CachifyRateLimitedError:
    with pytest.raises(CachifyRateLimitedError) as info:
        fn()
    return info.value


async def alimited(fn: Callable[[], Any]) -> CachifyRateLimitedError:
    with pytest.raises(CachifyRateLimitedError) as info:
        await fn()
    return info.value


# -- parsing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "count", "period_ms"),
    [
        ("10/s", 10, 1_000),
        ("100/m", 100, 60_000),
        ("1000/h", 1000, 3_600_000),
        ("3/d", 3, 86_400_000),
        ("5/2s", 5, 2_000),
        (" 7 / 3 m ", 7, 180_000),
    ],
)
def test_parse_rate(text: str, count: int, period_ms: int) -> None:
    rate = parse_rate(text)
    assert rate == Rate(count, period_ms)
    assert parse_rate(str(rate)) == rate


def test_emission_interval_is_rounded_up_to_whole_microseconds() -> None:
    assert parse_rate("3/s").emission_us == 333_334  # never faster than asked
    assert parse_rate("10/s").emission_us == 100_000
    assert parse_rate("5000/s").emission_us == 200


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        ("10/x", "is not '<count>/<period>'"),
        ("10", "is not '<count>/<period>'"),
        ("ten/s", "is not '<count>/<period>'"),
        ("1.5/s", "is not '<count>/<period>'"),
        ("0/s", "the count must be >= 1"),
        ("5/0s", "the period must be >= 1s"),
        ([], "non-empty list"),
        (["10/s", "10/1s"], "listed twice"),
        (10, "must be a string"),
    ],
)
def test_bad_rate_fails_at_construction_naming_the_limiter(rate: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r"^rate_limit 'k': .*" + message):
        rate_limit("k", rate)
    with pytest.raises(ValueError, match=r"^rate_limited 'k': .*" + message):
        rate_limited("k", rate)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cost": -1}, "cost must be an int >= 1"),
        ({"cost": 0}, "cost must be an int >= 1"),
        ({"cost": True}, "cost must be an int >= 1"),
        ({"burst": 0}, "burst must be an int >= 1"),
        ({"cost": 11}, r"cost=11 exceeds the burst of rate '10/s' \(10\)"),
        ({"cost": 3, "burst": 2}, r"cost=3 exceeds the burst of rate '10/s' \(2\)"),
        ({"timeout": -1}, "timeout must be a number of seconds >= 0"),
    ],
)
def test_bad_options_fail_at_construction_and_decoration(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rate_limit("k", "10/s", **options)
    with pytest.raises(ValueError, match=message):
        rate_limited("k", "10/s", **options)


def test_nowait_with_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="nowait=True never waits"):
        rate_limit("k", "10/s", nowait=True, timeout=1)


def test_template_naming_a_missing_parameter_fails_at_decoration() -> None:
    def f(tenant: str) -> None: ...

    with pytest.raises(CachifyKeyError, match="'tenant_id'"):
        rate_limit("t-{tenant_id}", "10/s")(f)
    with pytest.raises(CachifyKeyError, match="'tenant_id'"):
        rate_limited("t-{tenant_id}", "10/s")(f)


# -- burst, then the emission interval ----------------------------------------------------------------
@pytest.mark.parametrize("backend", WITH_CLUSTER)
def test_admits_the_burst_then_one_per_interval_sync(cachify: Cachify) -> None:
    r = cachify.rate_limit("b", "10/s", nowait=True)
    assert r.remaining() == 10
    assert r.retry_after() == 0.0
    for i in range(10):
        with r:
            assert r.remaining() == 9 - i
    error = limited(r.acquire)
    assert 0 < error.retry_after_s <= 0.1
    assert r.remaining() == 0
    assert 0 < r.retry_after() <= 0.1
    time.sleep(error.retry_after_s)  # exactly the reported wait: one more call is due
    r.acquire()
    again = limited(r.acquire)
    assert 0 < again.retry_after_s <= 0.1


@pytest.mark.parametrize("backend", WITH_CLUSTER)
async def test_admits_the_burst_then_one_per_interval_async(cachify: Cachify) -> None:
    r = cachify.rate_limit("b", "10/s", nowait=True)
    assert await r.aremaining() == 10
    for _ in range(10):
        async with r:
            pass
    error = await alimited(r.aacquire)
    assert 0 < error.retry_after_s <= 0.1
    assert 0 < await r.aretry_after() <= 0.1
    await asyncio.sleep(error.retry_after_s)
    await r.aacquire()
    await alimited(r.aacquire)


def test_waiting_calls_are_spaced_at_least_one_interval_apart_sync(cachify: Cachify) -> None:
    r = cachify.rate_limit("w", "50/s", burst=1)
    admitted = []
    for _ in range(6):
        with r:
            admitted.append(time.monotonic())
    # The store spaces admissions 20 ms apart; seen from here, each is late by its reply's
    # latency, which varies per call — so the span of all five intervals is checked, which
    # only the first and the last reply's latency blur (2 ms each).
    assert admitted[-1] - admitted[0] >= 5 * 0.02 - 0.004, admitted


async def test_waiting_calls_are_spaced_at_least_one_interval_apart_async(cachify: Cachify) -> None:
    r = cachify.rate_limit("w", "50/s", burst=1)
    admitted = []
    for _ in range(6):
        async with r:
            admitted.append(time.monotonic())
    assert admitted[-1] - admitted[0] >= 5 * 0.02 - 0.004, admitted


async def test_waiting_tasks_share_the_rate(cachify: Cachify) -> None:
    r = cachify.rate_limit("tasks", "50/s", burst=2)
    start = time.monotonic()

    async def one() -> float:
        async with r:
            return time.monotonic() - start

    done = sorted(await asyncio.wait_for(asyncio.gather(*(one() for _ in range(6))), WAIT_S))
    # 2 at once, then one every 20 ms: the 6th no sooner than 4 intervals in
    assert done[-1] >= 4 * 0.02 - 0.002, done


@pytest.mark.parametrize("backend", WITH_CLUSTER)
def test_threads_together_get_exactly_the_burst(cachify: Cachify) -> None:
    r = cachify.rate_limit("crowd", ["10/m", "1000/s"], nowait=True)
    admitted = [0]
    mutex = threading.Lock()

    def work() -> None:
        for _ in range(15):
            with contextlib.suppress(CachifyRateLimitedError):
                r.acquire()
                with mutex:
                    admitted[0] += 1

    workers = [started(work) for _ in range(6)]
    for worker in workers:
        worker.finish()
    assert admitted[0] == 10  # 90 tries, 10 admitted: none lost, none extra
    assert r.remaining() == 0


async def test_tasks_together_get_exactly_the_burst(cachify: Cachify) -> None:
    r = cachify.rate_limit("crowd", "10/m", nowait=True)

    async def work() -> int:
        admitted = 0
        for _ in range(15):
            with contextlib.suppress(CachifyRateLimitedError):
                await r.aacquire()
                admitted += 1
        return admitted

    assert sum(await asyncio.wait_for(asyncio.gather(*(work() for _ in range(6))), WAIT_S)) == 10


# -- several limits: all or nothing -----------------------------------------------------------------
@pytest.mark.parametrize("backend", WITH_CLUSTER)
def test_several_limits_none_counted_when_one_refuses_sync(cachify: Cachify) -> None:
    both = cachify.rate_limit("m", ["2/s", "3/m"], nowait=True)
    per_second = cachify.rate_limit("m", "2/s")  # the same key and rate: the same state
    per_minute = cachify.rate_limit("m", "3/m")
    both.acquire()
    both.acquire()
    error = limited(both.acquire)  # refused by 2/s ...
    assert 0 < error.retry_after_s <= 0.5
    assert error.key == "m"
    assert error.rates == "2/s, 3/m"
    assert per_minute.remaining() == 1  # ... and not counted by 3/m
    assert both.remaining() == 0
    time.sleep(error.retry_after_s)
    both.acquire()  # the third of the minute
    refused = limited(both.acquire)  # now both refuse, 3/m for about 20 s ...
    assert refused.retry_after_s > 10
    assert per_minute.remaining() == 0
    assert per_second.retry_after() <= 0.5  # ... and 2/s counted nothing (else ~1 s)


@pytest.mark.parametrize("backend", WITH_CLUSTER)
async def test_several_limits_none_counted_when_one_refuses_async(cachify: Cachify) -> None:
    both = cachify.rate_limit("m", ["10/s", "3/m"], nowait=True)
    per_second = cachify.rate_limit("m", "10/s")
    for _ in range(3):
        await both.aacquire()
    error = await alimited(both.aacquire)
    assert error.retry_after_s > 10
    assert await per_second.aremaining() == 7
    assert await both.aremaining() == 0


# -- cost --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", WITH_CLUSTER)
def test_cost_counts_a_call_as_several(cachify: Cachify) -> None:
    heavy = cachify.rate_limit("c", "10/s", cost=4, nowait=True)
    light = cachify.rate_limit("c", "10/s", cost=2, nowait=True)
    heavy.acquire()
    heavy.acquire()
    assert heavy.remaining() == 2  # calls of cost 1
    error = limited(heavy.acquire)  # 4 do not fit in 2
    assert 0 < error.retry_after_s <= 0.2  # two intervals must pass
    assert heavy.retry_after() > 0
    assert light.retry_after() == 0.0
    light.acquire()  # 2 fit
    assert light.remaining() == 0
    limited(light.acquire)


async def test_cost_async(cachify: Cachify) -> None:
    heavy = cachify.rate_limit("c", "10/s", cost=5, nowait=True)
    await heavy.aacquire()
    await heavy.aacquire()
    error = await alimited(heavy.aacquire)
    assert 0.4 < error.retry_after_s <= 0.5
    assert await heavy.aremaining() == 0


# -- nowait and timeout ------------------------------------------------------------------------------
def test_nowait_error_carries_key_and_retry_after(cachify: Cachify) -> None:
    r = cachify.rate_limit("tenant-7", "20/s", burst=1, nowait=True)
    r.acquire()
    error = limited(r.acquire)
    assert error.key == "tenant-7"
    assert 0 < error.retry_after_s <= 0.05
    assert str(error) == f"tenant-7 is rate limited (20/s); retry after {error.retry_after_s:.3f}s"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.key, copy.retry_after_s, str(copy)) == (
        CachifyRateLimitedError,
        "tenant-7",
        error.retry_after_s,
        str(error),
    )


def test_timeout_too_short_for_the_reported_wait_raises_without_sleeping(cachify: Cachify) -> None:
    cachify.rate_limit("t", "1/m").acquire()
    start = time.monotonic()
    error = limited(cachify.rate_limit("t", "1/m", timeout=2).acquire)
    assert time.monotonic() - start < 2  # the server said ~60 s: it did not sleep the 2 s out
    assert error.retry_after_s > 50


async def test_timeout_too_short_raises_async(cachify: Cachify) -> None:
    await cachify.rate_limit("t", "1/m").aacquire()
    start = time.monotonic()
    await alimited(cachify.rate_limit("t", "1/m", timeout=2).aacquire)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("backend", WITH_CLUSTER)
def test_timeout_long_enough_waits_and_admits(cachify: Cachify) -> None:
    cachify.rate_limit("t", "20/s", burst=1).acquire()
    start = time.monotonic()
    with cachify.rate_limit("t", "20/s", burst=1, timeout=WAIT_S) as r:
        assert time.monotonic() - start >= 0.05 - 0.005
        assert r.remaining() == 0


async def test_cancelled_waiter_counts_nothing(cachify: Cachify) -> None:
    r = cachify.rate_limit("cancel", "1/m")
    await r.aacquire()
    waiter = asyncio.ensure_future(r.aacquire())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert 55 < await r.aretry_after() <= 60  # still the first call's wait, no second one queued


# -- inspecting counts nothing -----------------------------------------------------------------------
@pytest.mark.parametrize("backend", WITH_CLUSTER)
def test_remaining_and_retry_after_do_not_consume(cachify: Cachify) -> None:
    r = cachify.rate_limit("peek", "3/m", nowait=True)
    for _ in range(20):
        assert r.remaining() == 3
        assert r.retry_after() == 0.0
    for _ in range(3):
        r.acquire()
    limited(r.acquire)


async def test_aremaining_and_aretry_after_do_not_consume(cachify: Cachify) -> None:
    r = cachify.rate_limit("peek", "3/m", nowait=True)
    for _ in range(20):
        assert await r.aremaining() == 3
        assert await r.aretry_after() == 0.0
    for _ in range(3):
        await r.aacquire()
    await alimited(r.aacquire)


def test_leaving_a_block_gives_nothing_back(cachify: Cachify) -> None:
    r = cachify.rate_limit("starts", "2/m", nowait=True)
    for _ in range(2):
        with r:
            pass
    assert r.remaining() == 0
    with pytest.raises(CachifyRateLimitedError), r:
        pass


# -- decorators and templates ------------------------------------------------------------------------
@pytest.mark.parametrize("backend", WITH_CLUSTER)
def test_template_keys_are_independent_per_tenant_sync(cachify: Cachify) -> None:
    @rate_limit("tenant-{tenant_id}", "2/m", nowait=True)
    def fetch(tenant_id: int, item: str = "") -> str:
        return f"{tenant_id}:{item}"

    assert fetch(1, "a") == "1:a"
    assert fetch(tenant_id=1, item="b") == "1:b"
    error = limited(lambda: fetch(1))
    assert error.key == "tenant-1"
    assert fetch(2) == "2:"  # another tenant, another limit
    assert fetch.remaining(1) == 0
    assert fetch.remaining(2) == 1
    assert fetch.retry_after(1) > 0
    assert fetch.retry_after(3) == 0.0


@pytest.mark.parametrize("backend", WITH_CLUSTER)
async def test_template_keys_are_independent_per_tenant_async(cachify: Cachify) -> None:
    @cachify.rate_limit("tenant-{tenant_id}", "2/m", nowait=True)
    async def fetch(tenant_id: int) -> int:
        return tenant_id

    assert [await fetch(1), await fetch(1)] == [1, 1]
    error = await alimited(lambda: fetch(1))
    assert error.key == "tenant-1"
    assert await fetch(2) == 2
    assert await fetch.remaining(2) == 1
    assert await fetch.retry_after(1) > 0


def test_rate_limited_on_limited_gets_the_calls_arguments_sync(cachify: Cachify) -> None:
    refused: list[tuple[Any, ...]] = []

    def on_limited(tenant: str, n: int = 0) -> str:
        refused.append((tenant, n))
        return "later"

    @rate_limited(key="geo-{tenant}", rate="2/m", on_limited=on_limited)
    def geo(tenant: str, n: int = 0) -> str:
        return f"{tenant}-{n}"

    assert [geo("a", 1), geo("a", n=2), geo("a", 3), geo("b")] == ["a-1", "a-2", "later", "b-0"]
    assert refused == [("a", 3)]
    assert geo.remaining("a") == 0


async def test_rate_limited_async_on_limited_is_awaited(cachify: Cachify) -> None:
    async def on_limited(tenant: str) -> str:
        await asyncio.sleep(0)
        return f"later {tenant}"

    @cachify.rate_limited("geo-{tenant}", "1/m", on_limited)
    async def geo(tenant: str) -> str:
        return tenant

    assert [await geo("a"), await geo("a")] == ["a", "later a"]
    assert await geo.retry_after("a") > 50


async def test_rate_limited_async_with_sync_on_limited(cachify: Cachify) -> None:
    @rate_limited("s", "1/m", on_limited=lambda: "sync answer")
    async def f() -> str:
        return "ran"

    assert [await f(), await f()] == ["ran", "sync answer"]


def test_rate_limited_raise_on_limited_sync(cachify: Cachify) -> None:
    @rate_limited("r-{x}", "1/m", raise_on_limited=True)
    def f(x: int) -> int:
        return x

    assert f(1) == 1
    error = limited(lambda: f(1))
    assert error.key == "r-1"
    assert error.retry_after_s > 50


async def test_rate_limited_raise_on_limited_async(cachify: Cachify) -> None:
    @rate_limited("r", "1/m", raise_on_limited=True, on_limited=lambda: "ignored")
    async def f() -> int:
        return 1

    assert await f() == 1
    await alimited(f)


def test_rate_limited_waits_by_default_sync(cachify: Cachify) -> None:
    calls: list[float] = []

    @rate_limited("d", "20/s", burst=1)
    def f() -> None:
        calls.append(time.monotonic())

    for _ in range(3):
        f()
    assert calls[2] - calls[0] >= 2 * 0.05 - 0.004


async def test_rate_limited_waits_by_default_async(cachify: Cachify) -> None:
    calls: list[float] = []

    @rate_limited("d", "20/s", burst=1)
    async def f() -> None:
        calls.append(time.monotonic())

    for _ in range(3):
        await f()
    assert calls[2] - calls[0] >= 2 * 0.05 - 0.004


def test_rate_limited_timeout_then_on_limited(cachify: Cachify) -> None:
    @rate_limited("tw", "20/s", on_limited=lambda: "late", burst=1, timeout=WAIT_S)
    def f() -> str:
        return "ran"

    assert [f(), f()] == ["ran", "ran"]  # the second waited its 50 ms instead of being diverted

    @rate_limited("tw2", "1/m", on_limited=lambda: "late", timeout=1)
    def g() -> str:
        return "ran"

    assert [g(), g()] == ["ran", "late"]


def test_instance_decorators_use_their_instance(
    cachify: Cachify, make_cachify: Callable[..., Cachify]
) -> None:
    other = make_cachify()

    @other.rate_limited("i", "1/m", raise_on_limited=True)
    def f() -> None: ...

    f()
    assert cachify.rate_limit("i", "1/m").remaining() == 1  # the global instance saw nothing
    assert other.rate_limit("i", "1/m").remaining() == 0


def test_rate_keys_never_collide_with_lock_or_pool_keys(cachify: Cachify) -> None:
    with cachify.lock("same"), cachify.pool("same", 1):
        cachify.rate_limit("same", "1/m", nowait=True).acquire()
    assert cachify.pool("same", 1).size() == 0


# -- expiry: an idle limiter leaves nothing ---------------------------------------------------------
def test_redis_keys_expire_when_the_limit_is_idle(flushed_redis_url: str) -> None:
    c = init_cachify(url=flushed_redis_url, prefix="T-idle-", is_global=False)
    client: Any = c.sync_backend.client  # type: ignore[attr-defined]
    r = c.rate_limit("x", ["20/s", "10/m"], nowait=True)
    r.acquire()
    keys = sorted(k.decode() for k in client.keys("*T-idle-*"))
    assert keys == ["{T-idle-x-rate}:10/60000ms", "{T-idle-x-rate}:20/1000ms"]  # one hash tag
    ttls = {k: client.pttl(k) for k in keys}
    assert 0 < ttls["{T-idle-x-rate}:20/1000ms"] <= 50  # one interval ahead of now
    assert 5_000 < ttls["{T-idle-x-rate}:10/60000ms"] <= 6_000
    c2 = init_cachify(url=flushed_redis_url, prefix="T-idle2-", is_global=False)
    short = c2.rate_limit("y", "50/s", nowait=True)
    for _ in range(5):
        short.acquire()
    assert 0 < client.pttl("{T-idle2-y-rate}:50/1000ms") <= 100  # 5 intervals of 20 ms
    wait_until(lambda: client.keys("*T-idle2-*") == [], timeout_s=WAIT_S)
    assert short.remaining() == 50  # idle again: the full burst
    assert client.keys("*T-idle2-*") == []  # looking wrote nothing


def test_memory_state_is_swept_when_the_limit_is_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    c = init_cachify(sync_client=store, prefix="M-", is_global=False)
    r = c.rate_limit("x", ["20/s", "10/m"], nowait=True)
    r.acquire()
    assert sorted(store._rates) == ["M-x-rate:10/60000ms", "M-x-rate:20/1000ms"]
    now = memory_module._now()
    monkeypatch.setattr(memory_module, "_now", lambda: now + 3.0)  # past 20/s's TAT only
    store._sweep(memory_module._now())
    assert list(store._rates) == ["M-x-rate:10/60000ms"]
    assert r.remaining() == 9
    monkeypatch.setattr(memory_module, "_now", lambda: now + 7.0)
    store._sweep(memory_module._now())
    assert store._rates == {}
    assert r.remaining() == 10


# -- custom clients cannot rate-limit ----------------------------------------------------------------
def test_custom_clients_refuse_clearly_at_use() -> None:
    sync_only = init_cachify(sync_client=DictClient(), is_global=False)
    r = sync_only.rate_limit("k", "10/s")  # constructing is fine: no I/O
    with pytest.raises(CachifyInitError, match=r"rate limits are not supported on custom DictClient"):
        r.acquire()
    with pytest.raises(CachifyInitError, match="use the memory backend or Redis"):
        asyncio.run(r.aacquire())
    async_only = init_cachify(async_client=AsyncDictClient(), is_global=False)
    with pytest.raises(CachifyInitError, match="not supported on custom AsyncDictClient"):
        asyncio.run(async_only.rate_limit("k", "10/s").aremaining())


# -- across processes ---------------------------------------------------------------------------------
def test_limit_holds_across_processes_in_every_window(flushed_redis_url: str, raw: redis.Redis) -> None:
    rate, count, burst, duration_s, procs = "40/s", 40, 5, 2.0, 3
    interval_s = 1 / count
    prefix = f"MPR{uuid.uuid4().hex[:8]}-"
    barrier = CTX.Barrier(procs)
    workers = start_all(
        mp_workers_rate.rate_worker,
        [(flushed_redis_url, prefix, rate, burst, duration_s, barrier) for _ in range(procs)],
    )
    join_all(workers, raw, prefix, duration_s + 20)
    intervals = [
        (float(a), float(b))
        for a, b in (x.decode().split(":") for x in raw.lrange(prefix + "admitted", 0, -1))
    ]
    # GCRA: k admissions span at least (k - burst) intervals, so a window of w seconds holds at
    # most burst + ceil(w / interval) - 1 of them.
    for window_s in (0.1, 0.25, 0.5, 1.0):
        bound = burst + math.ceil(window_s / interval_s - 1e-9) - 1
        peak = certain_peak(intervals, window_s)
        assert peak <= bound, f"{peak} admissions within {window_s}s, limit allows {bound}"
    # and it does admit at its rate rather than starving everyone (bounded below, loosely)
    assert len(intervals) >= burst + count * duration_s / 2, len(intervals)
    assert certain_peak(intervals, 1.0) >= count / 2


@pytest.mark.parametrize("backend", WITH_CLUSTER)
async def test_several_limiters_at_once_count_a_call_only_if_all_admit_it(cachify: Cachify) -> None:
    """``rate_acquire_bounds`` (a task's ``rate_keys``): on memory and a single Redis server no
    limiter counts a call another refuses; on Cluster they are counted in order up to the first
    refusal. ``refused`` names the limiter that refused."""
    from cachify_core.rates import rate_limits

    _, slow = rate_limits("test", "1/s", 1, 1)
    _, fast = rate_limits("test", "10/s", 10, 1)
    tenant, everyone = cachify.prefix + "bounds-tenant", cachify.prefix + "bounds-all"
    sync, aio = cachify.sync_backend, cachify.async_backend
    assert sync.rate_acquire(tenant, slow, 1, True).allowed  # the tenant's one call this second
    before = sync.rate_acquire(everyone, fast, 1, False).remaining
    check = sync.rate_acquire_bounds([(everyone, fast), (tenant, slow)], 1, True)
    assert (check.allowed, check.refused) == (False, 1)
    assert 0 < check.retry_after_ms <= 1000
    after = sync.rate_acquire(everyone, fast, 1, False).remaining
    if getattr(sync, "_cluster", False):
        assert after == before - 1  # counted by the limiter before the refusal
    else:
        assert after == before  # all or nothing
    check = await aio.rate_acquire_bounds([(tenant, slow), (everyone, fast)], 1, True)
    assert (check.allowed, check.refused) == (False, 0)
    admitted = await aio.rate_acquire_bounds([(everyone, fast)], 1, True)
    assert (admitted.allowed, admitted.refused) == (True, -1)
