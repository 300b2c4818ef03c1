"""The embedded in-memory backend: a real, thread-safe and asyncio-safe store.

One :class:`MemoryStore` serves both twins: :class:`MemoryStore` itself is the blocking
backend, :class:`AsyncMemoryBackend` its asyncio face. Every primitive runs under one mutex
held for microseconds (no I/O inside), so it is atomic across threads and never blocks an
event loop for longer than that.

Bounds: cache entries are evicted least-recently-used beyond ``max_entries``; held locks, pool
slots and rate-limit TATs live in their own tables and are never evicted (only expired).
Expired locks, slots and TATs are swept in amortised O(1) per acquire.

Rate limits are GCRA on ``time.monotonic`` in microseconds (system-wide on Linux, so a TAT
stays meaningful in a forked child), under the same mutex: exactly the Redis script's logic.

Waiting is exact: a failed acquire with ``waiting`` > 0 registers a waiter under the same
mutex as the release that signals it, so no wake-up is lost; blocking waiters sleep on a
per-key ``threading.Condition``, asyncio waiters on a future resolved through their own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence

from .base import CacheRead, RateCheck, RateLimit

__all__ = ["DEFAULT_MAX_ENTRIES", "AsyncMemoryBackend", "MemoryStore"]

#: Enough for a busy process's hot set; at ~200 B of overhead per entry it stays in tens of MB.
DEFAULT_MAX_ENTRIES = 100_000

#: Acquires between sweeps of expired locks and slots (plus the tables' size, so a sweep's cost
#: is amortised to O(1) per acquire).
SWEEP_EVERY_ACQUIRES = 1024

_now = time.monotonic  # module-level so tests can fake the clock
_NO_META = ("0", "0")


def _deadline(ttl_ms: int | None) -> float:
    return math.inf if ttl_ms is None else _now() + ttl_ms / 1000.0


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_stores: weakref.WeakSet[MemoryStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Another thread may have held a store's mutex at fork(); the child has only this thread.
    for store in list(_stores):
        store._reset_after_fork()


class MemoryStore:
    """Process-local store; also the blocking backend over itself."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive int, got {max_entries!r}")
        self.name = "memory"
        self.max_entries = max_entries
        self._mutex = threading.Lock()
        self._cache: OrderedDict[str, tuple[bytes, str, float]] = OrderedDict()
        self._meta: dict[str, tuple[str, str]] = {}  # namespace -> (generation, fill epoch)
        self._locks: dict[str, tuple[str, float]] = {}
        self._pools: dict[str, dict[str, float]] = {}
        self._rates: dict[str, int] = {}  # "<key>:<limit name>" -> TAT, monotonic µs
        self._waiters: dict[str, int] = {}
        self._signals: dict[str, int] = {}
        self._conds: dict[str, threading.Condition] = {}
        self._async_waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._acquires_since_sweep = 0
        self._sweep_every = SWEEP_EVERY_ACQUIRES
        _stores.add(self)

    def _reset_after_fork(self) -> None:
        """In a forked child: a fresh mutex, and no waiters (they were the parent's threads and loops)."""
        self._mutex = threading.Lock()
        self._waiters.clear()
        self._signals.clear()
        self._conds.clear()
        self._async_waiters.clear()

    # -- cache entries -------------------------------------------------------------------
    def cache_get(self, ns: str, key: str) -> CacheRead:
        entry_key = f"{ns}\x00{key}"
        with self._mutex:
            gen, fill = self._meta.get(ns, _NO_META)
            entry = self._cache.get(entry_key)
            if entry is None:
                return CacheRead(None, gen, fill)
            if entry[1] != gen or entry[2] <= _now():
                del self._cache[entry_key]
                return CacheRead(None, gen, fill)
            self._cache.move_to_end(entry_key)
            return CacheRead(entry[0], gen, fill)

    def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> bool:
        expires_at = _deadline(ttl_ms)
        entry_key = f"{ns}\x00{key}"
        with self._mutex:
            if self._meta.get(ns, _NO_META)[0] != gen:
                return False
            self._cache[entry_key] = (value, gen, expires_at)
            self._cache.move_to_end(entry_key)
            if len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
            return True

    def cache_delete(self, ns: str, key: str) -> bool:
        with self._mutex:
            return self._cache.pop(f"{ns}\x00{key}", None) is not None

    def cache_clear(self, ns: str) -> None:
        with self._mutex:
            gen, fill = self._meta.get(ns, _NO_META)
            self._meta[ns] = (str(int(gen) + 1), fill)

    def cache_clear_fills(self, ns: str) -> None:
        with self._mutex:
            gen, fill = self._meta.get(ns, _NO_META)
            self._meta[ns] = (gen, str(int(fill) + 1))

    def __len__(self) -> int:
        return len(self._cache)

    # -- locks ---------------------------------------------------------------------------
    def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> bool:
        now = _now()
        with self._mutex:
            self._acquires_since_sweep += 1  # _maybe_sweep, inlined on the hot path
            if self._acquires_since_sweep > self._sweep_every:
                self._sweep(now)
            held = self._locks.get(key)
            if held is not None and held[1] > now:
                if waiting:
                    self._waiters[key] = self._waiters.get(key, 0) + 1
                return False
            self._locks[key] = (token, math.inf if ttl_ms is None else now + ttl_ms / 1000.0)
            return True

    def lock_release(self, key: str, token: str) -> bool:
        now = _now()
        with self._mutex:
            held = self._locks.get(key)
            if held is None or held[0] != token or held[1] <= now:
                return False
            del self._locks[key]
            if self._waiters:
                self._signal(key)
            return True

    def lock_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        with self._mutex:
            held = self._locks.get(key)
            if held is None or held[0] != token or held[1] <= _now():
                return False
            self._locks[key] = (token, _deadline(ttl_ms))
            return True

    def lock_holder(self, key: str) -> str | None:
        with self._mutex:
            held = self._locks.get(key)
            if held is None or held[1] <= _now():
                return None
            return held[0]

    def lock_force_release(self, key: str) -> bool:
        with self._mutex:
            held = self._locks.pop(key, None)
            if held is None:
                return False
            self._signal(key)
            return held[1] > _now()

    # -- pools ---------------------------------------------------------------------------
    def _live_slots(self, key: str) -> dict[str, float]:
        slots = self._pools.get(key)
        if slots is None:
            return {}
        now = _now()
        expired = [t for t, exp in slots.items() if exp <= now]
        for t in expired:
            del slots[t]
        return slots

    def pool_acquire(self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float) -> bool:
        with self._mutex:
            self._maybe_sweep()
            slots = self._live_slots(key)
            if token not in slots and len(slots) >= max_size:  # a holder's token renews its slot
                if waiting:
                    self._waiters[key] = self._waiters.get(key, 0) + 1
                return False
            if not slots:
                slots = self._pools[key] = {}
            slots[token] = _deadline(ttl_ms)
            return True

    def pool_release(self, key: str, token: str) -> bool:
        with self._mutex:
            slots = self._live_slots(key)
            if slots.pop(token, None) is None:
                return False
            if not slots:
                self._pools.pop(key, None)
            self._signal(key)
            return True

    def pool_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        with self._mutex:
            slots = self._live_slots(key)
            if token not in slots:
                return False
            slots[token] = _deadline(ttl_ms)
            return True

    def pool_size(self, key: str) -> int:
        with self._mutex:
            return len(self._live_slots(key))

    # -- rate limits (GCRA) --------------------------------------------------------------
    def rate_acquire(self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool) -> RateCheck:
        with self._mutex:
            self._maybe_sweep()
            now = int(_now() * 1_000_000)
            names = [f"{key}:{limit.name}" for limit in limits]
            tats = [max(self._rates.get(name, 0), now) for name in names]
            over_us = max(
                tat + cost * limit.emission_us - now - limit.burst * limit.emission_us
                for tat, limit in zip(tats, limits, strict=True)
            )
            allowed = over_us <= 0
            if allowed and consume:
                for i, limit in enumerate(limits):
                    tats[i] += cost * limit.emission_us
                    self._rates[names[i]] = tats[i]
            remaining = min(
                (limit.burst * limit.emission_us - (tat - now)) // limit.emission_us
                for tat, limit in zip(tats, limits, strict=True)
            )
        return RateCheck(allowed, 0 if allowed else -(-over_us // 1000), max(remaining, 0))

    # -- housekeeping --------------------------------------------------------------------
    def _maybe_sweep(self) -> None:
        self._acquires_since_sweep += 1
        if self._acquires_since_sweep > self._sweep_every:
            self._sweep(_now())

    def _sweep(self, now: float) -> None:
        """Drop expired locks and slots nobody touches again; amortised O(1) per acquire."""
        self._acquires_since_sweep = 0
        for key in [k for k, (_t, exp) in self._locks.items() if exp <= now]:
            del self._locks[key]
        for key in list(self._pools):
            if not self._live_slots(key):
                del self._pools[key]
        now_us = now * 1_000_000
        for key in [k for k, tat in self._rates.items() if tat <= now_us]:
            del self._rates[key]
        self._sweep_every = SWEEP_EVERY_ACQUIRES + len(self._locks) + len(self._pools) + len(self._rates)

    # -- waiting -------------------------------------------------------------------------
    def _signal(self, key: str) -> None:
        """Called under the mutex by every release: wake one registered waiter of ``key``."""
        registered = self._waiters.get(key, 0)
        if not registered:
            return
        self._signals[key] = min(self._signals.get(key, 0) + 1, registered)
        futures = self._async_waiters.get(key)
        if futures:
            loop, fut = futures.pop(0)
            with contextlib.suppress(RuntimeError):  # that loop is closed; its waiter is gone
                loop.call_soon_threadsafe(_resolve, fut)
            return
        cond = self._conds.get(key)
        if cond is not None:
            cond.notify()

    def _finish_wait(self, key: str) -> bool:
        """Under the mutex: consume a signal if one is pending and deregister the waiter."""
        signals = self._signals.get(key, 0)
        if signals:
            self._signals[key] = signals - 1
        remaining = self._waiters.get(key, 1) - 1
        if remaining > 0:
            self._waiters[key] = remaining
        else:
            self._waiters.pop(key, None)
            self._signals.pop(key, None)
            self._conds.pop(key, None)
            self._async_waiters.pop(key, None)
        return bool(signals)

    def wait(self, key: str, timeout_s: float) -> bool:
        with self._mutex:
            if not self._signals.get(key):
                cond = self._conds.get(key)
                if cond is None:
                    cond = self._conds[key] = threading.Condition(self._mutex)
                cond.wait(max(timeout_s, 0.0))
            return self._finish_wait(key)

    async def await_signal(self, key: str, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        with self._mutex:
            if self._signals.get(key):
                return self._finish_wait(key)
            fut: asyncio.Future[None] = loop.create_future()
            self._async_waiters.setdefault(key, []).append((loop, fut))
        try:
            await asyncio.wait_for(fut, max(timeout_s, 0.0))
        except asyncio.TimeoutError:
            pass
        finally:
            with self._mutex:
                waiters = self._async_waiters.get(key)
                if waiters is not None and (loop, fut) in waiters:
                    waiters.remove((loop, fut))
                signalled = self._finish_wait(key)
        return signalled


class AsyncMemoryBackend:
    """The asyncio face of a :class:`MemoryStore` (no thread hops: each call is microseconds)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.name = store.name

    async def cache_get(self, ns: str, key: str) -> CacheRead:
        return self.store.cache_get(ns, key)

    async def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> bool:
        return self.store.cache_set(ns, key, value, ttl_ms, gen)

    async def cache_delete(self, ns: str, key: str) -> bool:
        return self.store.cache_delete(ns, key)

    async def cache_clear(self, ns: str) -> None:
        self.store.cache_clear(ns)

    async def cache_clear_fills(self, ns: str) -> None:
        self.store.cache_clear_fills(ns)

    async def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> bool:
        return self.store.lock_acquire(key, token, ttl_ms, waiting)

    async def lock_release(self, key: str, token: str) -> bool:
        return self.store.lock_release(key, token)

    async def lock_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        return self.store.lock_extend(key, token, ttl_ms)

    async def lock_holder(self, key: str) -> str | None:
        return self.store.lock_holder(key)

    async def lock_force_release(self, key: str) -> bool:
        return self.store.lock_force_release(key)

    async def pool_acquire(
        self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float
    ) -> bool:
        return self.store.pool_acquire(key, token, max_size, ttl_ms, waiting)

    async def pool_release(self, key: str, token: str) -> bool:
        return self.store.pool_release(key, token)

    async def pool_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        return self.store.pool_extend(key, token, ttl_ms)

    async def pool_size(self, key: str) -> int:
        return self.store.pool_size(key)

    async def rate_acquire(
        self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool
    ) -> RateCheck:
        return self.store.rate_acquire(key, limits, cost, consume)

    async def wait(self, key: str, timeout_s: float) -> bool:
        return await self.store.await_signal(key, timeout_s)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
