"""The backend contract: the few atomic primitives every feature is built from.

``cached``, ``lock``, ``once`` and ``pool`` are policy over these methods and nothing else
(see docs/ARCHITECTURE.md). Each backend comes as a blocking twin and an asyncio twin with
the same method names; keys arrive fully built (prefix and feature postfix included).

Units: ``ttl_ms`` are milliseconds, ``None`` meaning "never expires"; ``timeout_s`` seconds.

Waiting: an acquire made with ``waiting`` > 0 (the seconds the caller will wait before its next
try; ``False``/0: it will not wait) that fails registers the caller as a waiter,
so the next release of that key leaves a wake-up signal; ``wait(key, timeout_s)`` consumes one
signal or returns after ``timeout_s``. On the memory and Redis backends registration and
release are atomic, so a release between a failed acquire and the wait is never missed; the
custom-client backends cannot signal and ``wait`` just sleeps (polling).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

__all__ = ["AsyncBackend", "CacheRead", "SyncBackend"]


class CacheRead(NamedTuple):
    """A cache lookup: the entry's payload (``None`` on a miss) and the namespace's counters.

    ``gen`` is handed back to ``cache_set`` so a result computed before a ``cache_clear`` is not
    stored after it; ``fill`` is the single-flight epoch (``cache_clear_fills`` moves it on).
    """

    value: bytes | None
    gen: str
    fill: str


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

    async def wait(self, key: str, timeout_s: float) -> bool: ...
