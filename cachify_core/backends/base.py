"""The backend contract: the few atomic primitives every feature is built from.

``cached``, ``lock``, ``once``, ``pool`` and ``rate`` are policy over these methods and nothing else
(see docs/ARCHITECTURE.md). Each backend comes as a blocking twin and an asyncio twin with
the same method names; keys arrive fully built (prefix and feature postfix included).

Units: ``ttl_ms`` are milliseconds, ``None`` meaning "never expires"; ``timeout_s`` seconds.

Waiting: an acquire made with ``waiting`` > 0 (the seconds the caller will wait before its next
try; ``False``/0: it will not wait) that fails registers the caller as a waiter,
so the next release of that key leaves a wake-up signal; ``wait(key, timeout_s)`` consumes one
signal or returns after ``timeout_s``. On the memory and Redis backends registration and
release are atomic, so a release between a failed acquire and the wait is never missed; the
custom-client backends cannot signal and ``wait`` just sleeps (polling).

Rate limits (``rate_acquire``) are GCRA: each limit of a limiter keeps one number, its
*theoretical arrival time* (TAT, microseconds of the store's clock: Redis server time, the
memory store's monotonic clock), at ``<key>:<limit.name>``. A call of weight ``cost`` is
admitted when, for every limit, ``max(TAT, now) + cost * emission_us - now <= burst *
emission_us``; then (if ``consume``) every TAT moves to that value, else nothing changes — all
limits of one call are checked together and none is consumed unless all admit. A TAT in the
past means "idle", so its key expires when the TAT passes and an idle limiter leaves nothing.
The custom-client backends cannot do this atomically and raise ``CachifyInitError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

__all__ = ["AsyncBackend", "CacheRead", "RateCheck", "RateLimit", "SyncBackend"]


class CacheRead(NamedTuple):
    """A cache lookup: the entry's payload (``None`` on a miss) and the namespace's counters.

    ``gen`` is handed back to ``cache_set`` so a result computed before a ``cache_clear`` is not
    stored after it; ``fill`` is the single-flight epoch (``cache_clear_fills`` moves it on).
    """

    value: bytes | None
    gen: str
    fill: str


class RateLimit(NamedTuple):
    """One limit of a rate check, as the backend sees it (GCRA)."""

    #: Suffix of the limit's state key: ``<key>:<name>``.
    name: str
    #: Microseconds between calls of cost 1 at the sustained rate (>= 1).
    emission_us: int
    #: Calls of cost 1 that may go at once from idle (>= 1).
    burst: int


class RateCheck(NamedTuple):
    """The outcome of a rate check (consuming or not)."""

    #: Every limit admits the call (and, if it consumed, the call is now counted).
    allowed: bool
    #: 0 if allowed; else milliseconds (rounded up) until every limit would admit it, unless
    #: other calls get in first.
    retry_after_ms: int
    #: Calls of cost 1 every limit would still admit right now (after this one, if consumed).
    remaining: int


class SyncBackend(Protocol):
    #: Human-readable server or store name, used in error messages and logs.
    name: str

    # Cache entries live in namespaces (one per cached function: "<prefix><template>-cached"),
    # so a whole function's cache clears in one operation, without scanning keys.
    def cache_get(self, ns: str, key: str) -> CacheRead:
        """The entry ``key`` of namespace ``ns`` if it belongs to the current generation."""
        ...

    def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> bool:
        """Store the entry unless ``ns`` was cleared since generation ``gen`` was read."""
        ...

    def cache_delete(self, ns: str, key: str) -> bool:
        """Delete one entry; whether it existed."""
        ...

    def cache_clear(self, ns: str) -> None:
        """Invalidate every entry of ``ns`` (moves its generation on; O(1))."""
        ...

    def cache_clear_fills(self, ns: str) -> None:
        """Move the single-flight epoch on: new misses stop waiting for computations in flight."""
        ...

    def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> bool:
        """Take ``key`` for ``token`` if nobody holds it."""
        ...

    def lock_release(self, key: str, token: str) -> bool:
        """Delete ``key`` only if ``token`` holds it (compare-and-delete); wakes one waiter."""
        ...

    def lock_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        """Set the remaining lifetime of a lock ``token`` still holds; ``False`` if it does not."""
        ...

    def lock_holder(self, key: str) -> str | None:
        """The token holding ``key``, or ``None``."""
        ...

    def lock_force_release(self, key: str) -> bool:
        """Delete lock ``key`` whoever holds it (an operator's tool); wakes one waiter."""
        ...

    def pool_acquire(self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float) -> bool:
        """Lease one of ``max_size`` slots of pool ``key`` for ``token``; expired leases are pruned first.

        A ``token`` that already holds a live slot keeps it and gets a fresh lease (so a token
        derived from a delivery lets its redelivery take over a dead run's slot). Custom-client
        backends do not guarantee this."""
        ...

    def pool_release(self, key: str, token: str) -> bool:
        """Give back ``token``'s slot; ``False`` if it held none (expired or never taken)."""
        ...

    def pool_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        """Renew ``token``'s slot lease; ``False`` if it holds none."""
        ...

    def pool_size(self, key: str) -> int:
        """Live (unexpired) slots of pool ``key``."""
        ...

    def rate_acquire(self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool) -> RateCheck:
        """GCRA check of every limit of ``key`` for a call of weight ``cost`` (see the module
        docstring); with ``consume``, admit it by moving every limit's TAT on, all or nothing."""
        ...

    def wait(self, key: str, timeout_s: float) -> bool:
        """Block until a release of ``key`` signals a registered waiter (True) or ``timeout_s`` passes."""
        ...


class AsyncBackend(Protocol):
    name: str

    async def cache_get(self, ns: str, key: str) -> CacheRead: ...

    async def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> bool: ...

    async def cache_delete(self, ns: str, key: str) -> bool: ...

    async def cache_clear(self, ns: str) -> None: ...

    async def cache_clear_fills(self, ns: str) -> None: ...

    async def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> bool: ...

    async def lock_release(self, key: str, token: str) -> bool: ...

    async def lock_extend(self, key: str, token: str, ttl_ms: int) -> bool: ...

    async def lock_holder(self, key: str) -> str | None: ...

    async def lock_force_release(self, key: str) -> bool: ...

    async def pool_acquire(
        self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float
    ) -> bool: ...

    async def pool_release(self, key: str, token: str) -> bool: ...

    async def pool_extend(self, key: str, token: str, ttl_ms: int) -> bool: ...

    async def pool_size(self, key: str) -> int: ...

    async def rate_acquire(
        self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool
    ) -> RateCheck: ...

    async def wait(self, key: str, timeout_s: float) -> bool: ...
