"""cachify: caching, owner-checked distributed locks, run-once and concurrency pools.

Public API compatible with py-cachify 3.1 (``init_cachify``, ``Cachify``, ``cached``,
``lock``, ``once``, ``pool``, ``pooled`` and their errors), sync and async alike, on an
embedded in-memory backend by default or on Redis 6.2+ (and Valkey).
"""

from .backends import MemoryStore
from .cached import CachedDecorator, cached
from .errors import (
    CachifyBackendError,
    CachifyError,
    CachifyInitError,
    CachifyKeyError,
    CachifyLockError,
    CachifyLockNotOwnedError,
    CachifyPoolFullError,
)
from .instance import Cachify, get_cachify, init_cachify
from .invalidation import invalidates
from .lock import lock
from .once import OnceDecorator, once
from .pool import PooledDecorator, pool, pooled
from .protocols import UNSET, AsyncClient, Decoder, Encoder, SyncClient, UnsetType
from .serialization import (
    CachifySerializationError,
    JsonSerializer,
    MsgpackSerializer,
    PickleSerializer,
    Serializer,
)
from .wrapping import (
    AsyncLockWrappedF,
    AsyncPoolWrappedF,
    AsyncResetWrappedF,
    LockedDecorator,
    SyncLockWrappedF,
    SyncPoolWrappedF,
    SyncResetWrappedF,
)

#: py-cachify's names for what ``cached``, ``once``/``lock`` and ``pooled`` return.
WrappedFunctionReset = CachedDecorator
WrappedFunctionLock = OnceDecorator
WrappedFunctionPool = PooledDecorator

__all__ = [
    "UNSET",
    "AsyncClient",
    "AsyncLockWrappedF",
    "AsyncPoolWrappedF",
    "AsyncResetWrappedF",
    "Cachify",
    "CachifyBackendError",
    "CachifyError",
    "CachifyInitError",
    "CachifyKeyError",
    "CachifyLockError",
    "CachifyLockNotOwnedError",
    "CachifyPoolFullError",
    "CachifySerializationError",
    "Decoder",
    "Encoder",
    "JsonSerializer",
    "LockedDecorator",
    "MemoryStore",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "SyncClient",
    "SyncLockWrappedF",
    "SyncPoolWrappedF",
    "SyncResetWrappedF",
    "UnsetType",
    "WrappedFunctionLock",
    "WrappedFunctionPool",
    "WrappedFunctionReset",
    "cached",
    "get_cachify",
    "init_cachify",
    "invalidates",
    "lock",
    "once",
    "pool",
    "pooled",
]

__version__ = "0.1.0"
