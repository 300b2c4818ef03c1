"""Backends: the atomic primitives under every feature, and how init arguments pick one.

========================  =========================================================
you pass                  sync / async backends used
========================  =========================================================
nothing                   one :class:`MemoryStore`, shared by both twins
``url=``                  Redis, sync client + one asyncio client per event loop
a redis-py client         Redis; the missing twin is derived on the same server
a ``MemoryStore``         that store for both twins
a custom ``SyncClient``   that client; async calls run it in a worker thread
a custom ``AsyncClient``  that client; sync use raises ``CachifyInitError``
========================  =========================================================

Never a silent split: when only one client is given, its twin talks to the same store.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import CachifyInitError
from ..protocols import AsyncClient, SyncClient
from .base import (
    AsyncBackend,
    CacheRead,
    Handover,
    RateCheck,
    RateLimit,
    RoomAdmission,
    RoomRelease,
    RoomSettings,
    RoomStats,
    RoomStatus,
    RoomSweep,
    SyncBackend,
)
from .client import AsyncClientBackend, ClientBackend, ThreadedAsyncBackend
from .memory import DEFAULT_MAX_ENTRIES, AsyncMemoryBackend, MemoryStore
from .redis import (
    AsyncRedisBackend,
    RedisBackend,
    async_twin,
    clients_from_url,
    is_async_redis_client,
    is_sync_redis_client,
    sync_twin,
)

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "AsyncBackend",
    "AsyncMemoryBackend",
    "AsyncRedisBackend",
    "CacheRead",
    "Handover",
    "MemoryStore",
    "RateCheck",
    "RateLimit",
    "RedisBackend",
    "RoomAdmission",
    "RoomRelease",
    "RoomSettings",
    "RoomStats",
    "RoomStatus",
    "RoomSweep",
    "SyncBackend",
    "resolve_backends",
]

logger = logging.getLogger("cachify")


def _missing(client: object, methods: tuple[str, ...]) -> list[str]:
    return [m for m in methods if not callable(getattr(client, m, None))]


def resolve_backends(
    sync_client: Any = None, async_client: Any = None, url: str | None = None
) -> tuple[SyncBackend | None, AsyncBackend]:
    """The backend pair for ``init_cachify``'s arguments (no I/O: clients connect lazily)."""
    if url is not None:
        if sync_client is not None or async_client is not None:
            raise CachifyInitError("pass either url= or sync_client=/async_client=, not both")
        sync, make_async = clients_from_url(url)
        return RedisBackend(sync), AsyncRedisBackend(factory=make_async, name=RedisBackend(sync).name)

    if sync_client is None and async_client is None:
        store = MemoryStore()
        return store, AsyncMemoryBackend(store)

    sync_backend: SyncBackend | None = None
    if isinstance(sync_client, MemoryStore):
        sync_backend = sync_client
    elif is_sync_redis_client(sync_client):
        sync_backend = RedisBackend(sync_client)
    elif sync_client is not None:
        missing = _missing(sync_client, ("get", "set", "delete"))
        if missing or not isinstance(sync_client, SyncClient):
            raise CachifyInitError(
                f"sync_client {type(sync_client).__name__} lacks {', '.join(missing)}: "
                "it must offer get(name), set(name, value, ex=None, nx=False) and delete(*names)"
            )
        sync_backend = ClientBackend(sync_client)

    async_backend: AsyncBackend
    if async_client is None:
        if isinstance(sync_backend, MemoryStore):
            async_backend = AsyncMemoryBackend(sync_backend)
        elif isinstance(sync_backend, RedisBackend):
            async_backend = AsyncRedisBackend(factory=async_twin(sync_client), name=sync_backend.name)
        else:
            assert isinstance(sync_backend, ClientBackend)
            async_backend = ThreadedAsyncBackend(sync_backend)
    elif isinstance(async_client, (MemoryStore, AsyncMemoryBackend)):
        store = async_client if isinstance(async_client, MemoryStore) else async_client.store
        async_backend = AsyncMemoryBackend(store)
        if sync_client is None:
            sync_backend = store
    elif is_async_redis_client(async_client):
        async_backend = AsyncRedisBackend(async_client)
        if sync_client is None:
            sync_backend = RedisBackend(sync_twin(async_client))
    else:
        missing = _missing(async_client, ("get", "set", "delete"))
        if missing or not isinstance(async_client, AsyncClient):
            raise CachifyInitError(
                f"async_client {type(async_client).__name__} lacks {', '.join(missing)}: "
                "it must offer async get(name), set(name, value, ex=None, nx=False) and delete(*names)"
            )
        async_backend = AsyncClientBackend(async_client)

    mixed_redis = isinstance(sync_backend, RedisBackend) or isinstance(async_backend, AsyncRedisBackend)
    if mixed_redis and sync_backend is not None and sync_backend.name != async_backend.name:
        logger.warning(
            "cachify: sync calls use %s but async calls use %s; locks and caches are not shared between them",
            sync_backend.name,
            async_backend.name,
        )
    return sync_backend, async_backend
