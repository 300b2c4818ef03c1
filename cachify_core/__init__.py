"""cachify: caching, owner-checked distributed locks, run-once, concurrency pools and rate limits.

Public API compatible with py-cachify 3.1 (``init_cachify``, ``Cachify``, ``cached``,
``lock``, ``once``, ``pool``, ``pooled`` and their errors) plus ``rate_limit`` /
``rate_limited``, sync and async alike, on an
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
    CachifyRateLimitedError,
)
from .instance import Cachify, get_cachify, init_cachify
from .invalidation import invalidates
from .lock import lock
from .once import OnceDecorator, once
from .pool import PooledDecorator, pool, pooled
from .protocols import UNSET, AsyncClient, Decoder, Encoder, SyncClient, UnsetType
from .rate import AsyncRateWrappedF, RateLimitedDecorator, SyncRateWrappedF, rate_limit, rate_limited
from .rates import Rate, parse_rate
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
    "AsyncRateWrappedF",
    "AsyncResetWrappedF",
    "Cachify",
    "CachifyBackendError",
    "CachifyError",
    "CachifyInitError",
    "CachifyKeyError",
    "CachifyLockError",
    "CachifyLockNotOwnedError",
    "CachifyPoolFullError",
    "CachifyRateLimitedError",
    "CachifySerializationError",
    "Decoder",
    "Encoder",
    "JsonSerializer",
    "LockedDecorator",
    "MemoryStore",
    "MsgpackSerializer",
    "PickleSerializer",
    "Rate",
    "RateLimitedDecorator",
    "Serializer",
    "SyncClient",
    "SyncLockWrappedF",
    "SyncPoolWrappedF",
    "SyncRateWrappedF",
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
    "parse_rate",
    "pool",
    "pooled",
    "rate_limit",
    "rate_limited",
]

__version__ = "0.1.0"
