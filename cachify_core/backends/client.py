"""Backends over user clients that only offer py-cachify's ``get / set(ex, nx) / delete``.

Semantics are best effort, as py-cachify documents for custom clients:

* mutual exclusion is exactly as good as the client's atomic ``set(..., nx=True)``;
* a release (and a lease renewal) reads the holder and then deletes (or re-sets) only if it is
  the caller — two round trips, so a lock that expires between them could, in that window, be
  deleted or re-set over the next holder's (Redis and memory backends compare-and-act
  atomically and have no such window);
* waiting is polling (``wait`` sleeps ``lock_poll_interval``): nothing signals a release;
* the client's own errors surface as ``CachifyBackendError`` naming the operation;
* a pool of ``max_size`` is ``max_size`` slot keys ``<key>:slot:<i>`` taken with ``set(nx)``,
  plus a ``<key>:size`` record of ``max_size`` (re-set with each slot's lifetime) so that any
  process can count the slots, not only one that used the pool: up to ``max_size`` + 1 round
  trips to acquire, one to release, 1 + ``max_size`` to count. Holders using different
  ``max_size`` or slot lifetimes on one key can make a count miss slots (best effort); with
  ``slot_exp=None`` the record never expires (one small key per pool key);
* a cache namespace's generation and fill epoch live in one ``<ns>:meta`` key read before the
  entry (2 round trips per lookup); clearing is a read-modify-write of it;
* TTLs are rounded up to whole seconds (``ex``); waiters poll every ``lock_poll_interval``;
* rate limits are **not supported**: a GCRA check must read, compare and write every limit in
  one atomic step, which get/set/delete cannot do without over-admitting under concurrency, so
  ``rate_acquire`` raises ``CachifyInitError`` naming the client (use the memory or Redis backend).
* no waiting rooms (``supports_waiting_room = False``): parking and handing a slot over must
  happen in one atomic step with the slot count, which get/set/delete cannot do. Every
  ``room_*`` mutation raises :class:`CachifyUnsupportedError`; ``room_stats`` and ``rooms``
  report empty rooms (nothing ever parks here). A task on such a backend falls back to backoff
  requeue.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

from ..errors import CachifyBackendError, CachifyInitError, CachifyUnsupportedError
from ..protocols import AsyncClient, SyncClient
from .base import (
    CacheRead,
    Call,
    RateCheck,
    RateLimit,
    RoomAdmission,
    RoomRelease,
    RoomSettings,
    RoomStats,
    RoomStatus,
    RoomSweep,
    acall_each,
    call_each,
)

__all__ = ["AsyncClientBackend", "ClientBackend", "ThreadedAsyncBackend"]


def _ex(ttl_ms: int | None) -> int | None:
    return None if ttl_ms is None else max(1, math.ceil(ttl_ms / 1000))


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, (bytes, bytearray)) else str(raw)


def _meta(raw: Any) -> tuple[int, int]:
    text = _text(raw)
    if not text:
        return 0, 0
    gen, _, fill = text.partition(":")
    return int(gen), int(fill or 0)


def _entry(raw: Any, gen: int) -> bytes | None:
    """The payload of a stored ``b"<gen>:<payload>"`` if it is of generation ``gen``."""
    if raw is None:
        return None
    data = bytes(raw)
    head, sep, payload = data.partition(b":")
    return payload if sep and head == str(gen).encode() else None


def _no_rates(name: str) -> CachifyInitError:
    return CachifyInitError(
        f"rate limits are not supported on {name}: a client offering only get/set/delete cannot check "
        "and count a rate atomically; use the memory backend or Redis (url=... or a redis-py client)"
    )


def _no_room(name: str, op: str) -> CachifyUnsupportedError:
    return CachifyUnsupportedError(
        f"{op} on {name}: a custom get/set/delete client cannot park or hand over atomically, so it "
        "has no waiting rooms (backend.supports_waiting_room is False); use Redis or the memory "
        "backend, or requeue with backoff"
    )


_EMPTY_ROOM = RoomStats(0, 0.0, 0, 0)


def _slot_keys(key: str, max_size: int) -> list[str]:
    return [f"{key}:slot:{i}" for i in range(max_size)]


def _size_key(key: str) -> str:
    """Where a pool's ``max_size`` is recorded for processes that never used the pool."""
    return f"{key}:size"


def _recorded_size(raw: Any) -> int:
    text = _text(raw)
    return int(text) if text and text.isdigit() else 0


class _SlotBook:
    """Which slot key each of this process's pool tokens took, and the size of each pool this
    process used."""

    def __init__(self) -> None:
        self.slot_of: dict[str, str] = {}
        self.max_size: dict[str, int] = {}


class _Guarded:
    """A user's blocking client whose failures surface as CachifyBackendError (naming the
    operation and the client), as the Redis backend's do, so ``cached`` can fail open."""

    def __init__(self, client: SyncClient, name: str) -> None:
        self._client = client
        self._name = name

    def get(self, name: str) -> Any:
        try:
            return self._client.get(name)
        except Exception as exc:
            raise _fail("get", self._name, exc) from exc

    def set(self, name: str, value: Any, ex: int | None = None, nx: bool = False) -> Any:
        try:
            return self._client.set(name, value, ex=ex, nx=nx)
        except Exception as exc:
            raise _fail("set", self._name, exc) from exc

    def delete(self, *names: str) -> Any:
        try:
            return self._client.delete(*names)
        except Exception as exc:
            raise _fail("delete", self._name, exc) from exc


class _AsyncGuarded:
    """The asyncio twin of :class:`_Guarded`."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self._client = client
        self._name = name

    async def get(self, name: str) -> Any:
        try:
            return await self._client.get(name)
        except Exception as exc:
            raise _fail("get", self._name, exc) from exc

    async def set(self, name: str, value: Any, ex: int | None = None, nx: bool = False) -> Any:
        try:
            return await self._client.set(name, value, ex=ex, nx=nx)
        except Exception as exc:
            raise _fail("set", self._name, exc) from exc

    async def delete(self, *names: str) -> Any:
        try:
            return await self._client.delete(*names)
        except Exception as exc:
            raise _fail("delete", self._name, exc) from exc


def _fail(op: str, name: str, exc: Exception) -> CachifyBackendError:
    if isinstance(exc, CachifyBackendError):
        return exc
    return CachifyBackendError(f"{op} on {name} failed: {type(exc).__name__}: {exc}")


class ClientBackend:
    """Blocking backend over a :class:`~cachify_core.protocols.SyncClient`."""

    def __init__(self, client: SyncClient) -> None:
        self.name = f"custom {type(client).__name__}"
        self.client = _Guarded(client, self.name)
        self._book = _SlotBook()

    def cache_get(self, ns: str, key: str) -> CacheRead:
        gen, fill = _meta(self.client.get(f"{ns}:meta"))
        return CacheRead(_entry(self.client.get(f"{ns}:{key}"), gen), str(gen), str(fill))

    def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> bool:
        if str(_meta(self.client.get(f"{ns}:meta"))[0]) != gen:
            return False
        self.client.set(f"{ns}:{key}", gen.encode() + b":" + value, ex=_ex(ttl_ms))
        return True

    def cache_delete(self, ns: str, key: str) -> bool:
        existed = self.client.get(f"{ns}:{key}") is not None
        self.client.delete(f"{ns}:{key}")
        return existed

    def cache_clear(self, ns: str) -> None:
        gen, fill = _meta(self.client.get(f"{ns}:meta"))
        self.client.set(f"{ns}:meta", f"{gen + 1}:{fill}")

    def cache_clear_fills(self, ns: str) -> None:
        gen, fill = _meta(self.client.get(f"{ns}:meta"))
        self.client.set(f"{ns}:meta", f"{gen}:{fill + 1}")

    def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> bool:
        return bool(self.client.set(key, token, ex=_ex(ttl_ms), nx=True))

    def lock_release(self, key: str, token: str) -> bool:
        if _text(self.client.get(key)) != token:
            return False
        self.client.delete(key)
        return True

    def lock_force_release(self, key: str) -> bool:
        existed = self.client.get(key) is not None
        self.client.delete(key)
        return existed

    def lock_extend(self, key: str, token: str, ttl_ms: int | None) -> bool:
        if _text(self.client.get(key)) != token:
            return False
        self.client.set(key, token, ex=_ex(ttl_ms))
        return True

    def lock_holder(self, key: str) -> str | None:
        return _text(self.client.get(key))

    def pool_acquire(self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float) -> bool:
        self._book.max_size[key] = max_size
        for slot in _slot_keys(key, max_size):
            if self.client.set(slot, token, ex=_ex(ttl_ms), nx=True):
                self._book.slot_of[token] = slot
                # The record lives as long as the newest slot, so it outlives the slots it counts.
                self.client.set(_size_key(key), str(max_size), ex=_ex(ttl_ms))
                return True
        return False

    def pool_release(self, key: str, token: str) -> bool:
        slot = self._book.slot_of.pop(token, None)
        return slot is not None and self.lock_release(slot, token)

    def pool_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        slot = self._book.slot_of.get(token)
        if slot is None or not self.lock_extend(slot, token, ttl_ms):
            return False
        self.client.set(_size_key(key), str(self._book.max_size.get(key, 0)), ex=_ex(ttl_ms))
        return True

    def pool_size(self, key: str) -> int:
        recorded = _recorded_size(self.client.get(_size_key(key)))
        slots = _slot_keys(key, max(recorded, self._book.max_size.get(key, 0)))
        return sum(self.client.get(slot) is not None for slot in slots)

    def rate_acquire(self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool) -> RateCheck:
        raise _no_rates(self.name)

    def rate_acquire_bounds(
        self, bounds: Sequence[tuple[str, Sequence[RateLimit]]], cost: int, consume: bool
    ) -> RateCheck:
        raise _no_rates(self.name)

    def wait(self, key: str, timeout_s: float) -> bool:
        time.sleep(max(timeout_s, 0.0))
        return False

    # -- waiting rooms: not on a custom client (see the module docstring) ---------------------
    supports_waiting_room = False
    pipelines = False

    def room_acquire(
        self,
        key: str,
        token: str,
        entry_id: str,
        payload: bytes,
        room: RoomSettings,
        reservation: str | None = None,
    ) -> RoomAdmission:
        raise _no_room(self.name, "room_acquire")

    def room_release(
        self, key: str, token: str, room: RoomSettings, claimed: str | None = None
    ) -> RoomRelease:
        raise _no_room(self.name, "room_release")

    def room_cancel(self, key: str, entry_id: str, room: RoomSettings) -> RoomRelease:
        raise _no_room(self.name, "room_cancel")

    def room_park_until(
        self, key: str, entry_id: str, payload: bytes, delay_ms: int, room: RoomSettings, spacing_ms: int = 0
    ) -> RoomAdmission:
        raise _no_room(self.name, "room_park_until")

    def room_arrive(
        self, key: str, token: str, entry_id: str, payload: bytes, room: RoomSettings, reservation: str
    ) -> RoomStatus:
        raise _no_room(self.name, "room_arrive")

    def room_sweep(self, key: str, registry: str, limit: int) -> RoomSweep:
        raise _no_room(self.name, "room_sweep")

    def room_stats(self, key: str) -> RoomStats:
        return _EMPTY_ROOM

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        return call_each(self, calls)

    def rooms(self, registry: str) -> tuple[str, ...]:
        return ()


class AsyncClientBackend:
    """Asyncio backend over a :class:`~cachify_core.protocols.AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self.name = f"custom {type(client).__name__}"
        self.client = _AsyncGuarded(client, self.name)
        self._book = _SlotBook()

    async def cache_get(self, ns: str, key: str) -> CacheRead:
        gen, fill = _meta(await self.client.get(f"{ns}:meta"))
        return CacheRead(_entry(await self.client.get(f"{ns}:{key}"), gen), str(gen), str(fill))

    async def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> bool:
        if str(_meta(await self.client.get(f"{ns}:meta"))[0]) != gen:
            return False
        await self.client.set(f"{ns}:{key}", gen.encode() + b":" + value, ex=_ex(ttl_ms))
        return True

    async def cache_delete(self, ns: str, key: str) -> bool:
        existed = await self.client.get(f"{ns}:{key}") is not None
        await self.client.delete(f"{ns}:{key}")
        return existed

    async def cache_clear(self, ns: str) -> None:
        gen, fill = _meta(await self.client.get(f"{ns}:meta"))
        await self.client.set(f"{ns}:meta", f"{gen + 1}:{fill}")

    async def cache_clear_fills(self, ns: str) -> None:
        gen, fill = _meta(await self.client.get(f"{ns}:meta"))
        await self.client.set(f"{ns}:meta", f"{gen}:{fill + 1}")

    async def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> bool:
        return bool(await self.client.set(key, token, ex=_ex(ttl_ms), nx=True))

    async def lock_release(self, key: str, token: str) -> bool:
        if _text(await self.client.get(key)) != token:
            return False
        await self.client.delete(key)
        return True

    async def lock_force_release(self, key: str) -> bool:
        existed = await self.client.get(key) is not None
        await self.client.delete(key)
        return existed

    async def lock_extend(self, key: str, token: str, ttl_ms: int | None) -> bool:
        if _text(await self.client.get(key)) != token:
            return False
        await self.client.set(key, token, ex=_ex(ttl_ms))
        return True

    async def lock_holder(self, key: str) -> str | None:
        return _text(await self.client.get(key))

    async def pool_acquire(
        self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float
    ) -> bool:
        self._book.max_size[key] = max_size
        for slot in _slot_keys(key, max_size):
            if await self.client.set(slot, token, ex=_ex(ttl_ms), nx=True):
                self._book.slot_of[token] = slot
                await self.client.set(_size_key(key), str(max_size), ex=_ex(ttl_ms))
                return True
        return False

    async def pool_release(self, key: str, token: str) -> bool:
        slot = self._book.slot_of.pop(token, None)
        return slot is not None and await self.lock_release(slot, token)

    async def pool_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        slot = self._book.slot_of.get(token)
        if slot is None or not await self.lock_extend(slot, token, ttl_ms):
            return False
        await self.client.set(_size_key(key), str(self._book.max_size.get(key, 0)), ex=_ex(ttl_ms))
        return True

    async def pool_size(self, key: str) -> int:
        recorded = _recorded_size(await self.client.get(_size_key(key)))
        slots = _slot_keys(key, max(recorded, self._book.max_size.get(key, 0)))
        return sum([await self.client.get(slot) is not None for slot in slots])

    async def rate_acquire(
        self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool
    ) -> RateCheck:
        raise _no_rates(self.name)

    async def rate_acquire_bounds(
        self, bounds: Sequence[tuple[str, Sequence[RateLimit]]], cost: int, consume: bool
    ) -> RateCheck:
        raise _no_rates(self.name)

    async def wait(self, key: str, timeout_s: float) -> bool:
        await asyncio.sleep(max(timeout_s, 0.0))
        return False

    # -- waiting rooms: not on a custom client (see the module docstring) ---------------------
    supports_waiting_room = False
    pipelines = False

    async def room_acquire(
        self,
        key: str,
        token: str,
        entry_id: str,
        payload: bytes,
        room: RoomSettings,
        reservation: str | None = None,
    ) -> RoomAdmission:
        raise _no_room(self.name, "room_acquire")

    async def room_release(
        self, key: str, token: str, room: RoomSettings, claimed: str | None = None
    ) -> RoomRelease:
        raise _no_room(self.name, "room_release")

    async def room_cancel(self, key: str, entry_id: str, room: RoomSettings) -> RoomRelease:
        raise _no_room(self.name, "room_cancel")

    async def room_park_until(
        self, key: str, entry_id: str, payload: bytes, delay_ms: int, room: RoomSettings, spacing_ms: int = 0
    ) -> RoomAdmission:
        raise _no_room(self.name, "room_park_until")

    async def room_arrive(
        self, key: str, token: str, entry_id: str, payload: bytes, room: RoomSettings, reservation: str
    ) -> RoomStatus:
        raise _no_room(self.name, "room_arrive")

    async def room_sweep(self, key: str, registry: str, limit: int) -> RoomSweep:
        raise _no_room(self.name, "room_sweep")

    async def room_stats(self, key: str) -> RoomStats:
        return _EMPTY_ROOM

    async def batch(self, calls: Sequence[Call]) -> list[Any]:
        return await acall_each(self, calls)

    async def rooms(self, registry: str) -> tuple[str, ...]:
        return ()


class ThreadedAsyncBackend:
    """The asyncio face of a blocking-only backend: each call runs in a worker thread.

    Used when a custom sync client is given without an async one, so async code shares the
    very same store instead of silently using a separate in-memory cache (py-cachify's choice).
    """

    def __init__(self, sync: ClientBackend) -> None:
        self.sync = sync
        self.name = sync.name

    async def cache_get(self, ns: str, key: str) -> CacheRead:
        return await asyncio.to_thread(self.sync.cache_get, ns, key)

    async def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> bool:
        return await asyncio.to_thread(self.sync.cache_set, ns, key, value, ttl_ms, gen)

    async def cache_delete(self, ns: str, key: str) -> bool:
        return await asyncio.to_thread(self.sync.cache_delete, ns, key)

    async def cache_clear(self, ns: str) -> None:
        await asyncio.to_thread(self.sync.cache_clear, ns)

    async def cache_clear_fills(self, ns: str) -> None:
        await asyncio.to_thread(self.sync.cache_clear_fills, ns)

    async def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> bool:
        return await asyncio.to_thread(self.sync.lock_acquire, key, token, ttl_ms, waiting)

    async def lock_release(self, key: str, token: str) -> bool:
        return await asyncio.to_thread(self.sync.lock_release, key, token)

    async def lock_force_release(self, key: str) -> bool:
        return await asyncio.to_thread(self.sync.lock_force_release, key)

    async def lock_extend(self, key: str, token: str, ttl_ms: int | None) -> bool:
        return await asyncio.to_thread(self.sync.lock_extend, key, token, ttl_ms)

    async def lock_holder(self, key: str) -> str | None:
        return await asyncio.to_thread(self.sync.lock_holder, key)

    async def pool_acquire(
        self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float
    ) -> bool:
        return await asyncio.to_thread(self.sync.pool_acquire, key, token, max_size, ttl_ms, waiting)

    async def pool_release(self, key: str, token: str) -> bool:
        return await asyncio.to_thread(self.sync.pool_release, key, token)

    async def pool_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        return await asyncio.to_thread(self.sync.pool_extend, key, token, ttl_ms)

    async def pool_size(self, key: str) -> int:
        return await asyncio.to_thread(self.sync.pool_size, key)

    async def rate_acquire(
        self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool
    ) -> RateCheck:
        raise _no_rates(self.name)

    async def rate_acquire_bounds(
        self, bounds: Sequence[tuple[str, Sequence[RateLimit]]], cost: int, consume: bool
    ) -> RateCheck:
        raise _no_rates(self.name)

    async def wait(self, key: str, timeout_s: float) -> bool:
        await asyncio.sleep(max(timeout_s, 0.0))
        return False

    # -- waiting rooms: not on a custom client (see the module docstring) ---------------------
    supports_waiting_room = False
    pipelines = False

    async def room_acquire(
        self,
        key: str,
        token: str,
        entry_id: str,
        payload: bytes,
        room: RoomSettings,
        reservation: str | None = None,
    ) -> RoomAdmission:
        raise _no_room(self.name, "room_acquire")

    async def room_release(
        self, key: str, token: str, room: RoomSettings, claimed: str | None = None
    ) -> RoomRelease:
        raise _no_room(self.name, "room_release")

    async def room_cancel(self, key: str, entry_id: str, room: RoomSettings) -> RoomRelease:
        raise _no_room(self.name, "room_cancel")

    async def room_park_until(
        self, key: str, entry_id: str, payload: bytes, delay_ms: int, room: RoomSettings, spacing_ms: int = 0
    ) -> RoomAdmission:
        raise _no_room(self.name, "room_park_until")

    async def room_arrive(
        self, key: str, token: str, entry_id: str, payload: bytes, room: RoomSettings, reservation: str
    ) -> RoomStatus:
        raise _no_room(self.name, "room_arrive")

    async def room_sweep(self, key: str, registry: str, limit: int) -> RoomSweep:
        raise _no_room(self.name, "room_sweep")

    async def room_stats(self, key: str) -> RoomStats:
        return _EMPTY_ROOM

    async def batch(self, calls: Sequence[Call]) -> list[Any]:
        return await acall_each(self, calls)

    async def rooms(self, registry: str) -> tuple[str, ...]:
        return ()
