"""``Cachify`` instances, ``init_cachify`` and the global instance behind the top-level API."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .backends import SyncBackend, resolve_backends
from .errors import CachifyInitError
from .protocols import UNSET, AsyncClient, Decoder, Encoder, SyncClient, UnsetType
from .serialization import Codec, Serializer, serializer_for

if TYPE_CHECKING:
    from .cached import CachedDecorator
    from .lock import lock as _lock
    from .once import OnceDecorator
    from .pool import PooledDecorator
    from .pool import pool as _pool
    from .rate import RateLimitedDecorator
    from .rate import rate_limit as _rate_limit

__all__ = ["DEFAULT_LOCK_EXPIRATION_S", "Cachify", "get_cachify", "init_cachify", "seconds_to_ms"]

_NOT_INITIALIZED = "Cachify is not initialized, did you forget to call `init_cachify`?"


def seconds_to_ms(seconds: float | None, what: str) -> int | None:
    """A TTL in seconds (``None``: no expiry) as whole milliseconds, validated."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"{what} must be a positive number of seconds or None, got {seconds!r}")
    if math.isinf(seconds):
        return None
    return max(1, round(seconds * 1000))


#: Seconds a lock (and a ``@once`` hold) lives unless the instance is told otherwise: py-cachify's.
DEFAULT_LOCK_EXPIRATION_S = 30


def _lock_expiration(given: float | UnsetType | None, alias: float | UnsetType | None) -> float | None:
    """``default_lock_expiration``, given under our name, py-cachify's ``default_expiration``,
    or neither (30 s)."""
    if isinstance(given, str):
        raise CachifyInitError(
            f"default_lock_expiration got the str {given!r}: Cachify takes init_cachify's parameters "
            "in init_cachify's order (py-cachify's Cachify takes prefix third); pass prefix=... by keyword"
        )
    if not isinstance(given, UnsetType) and not isinstance(alias, UnsetType):
        raise CachifyInitError(
            "pass default_lock_expiration or default_expiration (py-cachify's name for it), not both"
        )
    if not isinstance(alias, UnsetType):
        return alias
    return DEFAULT_LOCK_EXPIRATION_S if isinstance(given, UnsetType) else given


class Cachify:
    """A set of features bound to one backend, prefix and defaults.

    Independent of the global instance: decorators made from ``Cachify(...).lock`` & co use
    this instance's backend, never the global one.

    Takes ``init_cachify``'s parameters in ``init_cachify``'s order. py-cachify's constructor
    keywords work too: ``default_expiration`` is its name for ``default_lock_expiration``.
    py-cachify's *positional* order differs (its third parameter is ``prefix``), so a ``str``
    in the third place is refused with a message saying so.
    """

    def __init__(
        self,
        sync_client: SyncClient | Any | None = None,
        async_client: AsyncClient | Any | None = None,
        default_lock_expiration: float | UnsetType | None = UNSET,
        default_cache_ttl: float | None = None,
        prefix: str = "PYC-",
        lock_poll_interval: float = 0.1,
        default_pool_slot_expiration: float | None = 600,
        *,
        url: str | None = None,
        serializer: str | Serializer | None = None,
        signing_key: bytes | str | None = None,
        default_expiration: float | UnsetType | None = UNSET,
    ) -> None:
        default_lock_expiration = _lock_expiration(default_lock_expiration, default_expiration)
        if not isinstance(prefix, str):
            raise CachifyInitError(f"prefix must be a str, got {type(prefix).__name__}")
        if (
            isinstance(lock_poll_interval, bool)
            or not isinstance(lock_poll_interval, (int, float))
            or not (lock_poll_interval > 0)
        ):
            raise CachifyInitError(
                f"lock_poll_interval must be a positive number of seconds, got {lock_poll_interval!r}"
            )
        try:
            self.default_lock_expiration_ms = seconds_to_ms(
                default_lock_expiration, "default_lock_expiration"
            )
            self.default_cache_ttl_ms = seconds_to_ms(default_cache_ttl, "default_cache_ttl")
            self.default_pool_slot_expiration_ms = seconds_to_ms(
                default_pool_slot_expiration, "default_pool_slot_expiration"
            )
        except ValueError as exc:
            raise CachifyInitError(str(exc)) from None
        self.default_lock_expiration = default_lock_expiration
        self.default_cache_ttl = default_cache_ttl
        self.default_pool_slot_expiration = default_pool_slot_expiration
        self.prefix = prefix
        self.lock_poll_interval = float(lock_poll_interval)
        self.codec = Codec(serializer_for(serializer), signing_key)
        self._sync, self.async_backend = resolve_backends(sync_client, async_client, url)

    @property
    def sync_backend(self) -> SyncBackend:
        if self._sync is None:
            raise CachifyInitError(
                f"only an async client ({self.async_backend.name}) was given, but a sync function or "
                "a `with` block needs a sync one: pass sync_client=... as well"
            )
        return self._sync

    def __repr__(self) -> str:
        return f"Cachify(prefix={self.prefix!r}, backend={self.async_backend.name!r})"

    # -- features bound to this instance ---------------------------------------------------
    def cached(
        self,
        key: str,
        ttl: float | UnsetType | None = UNSET,
        enc_dec: tuple[Encoder, Decoder] | None = None,
        *,
        single_flight: bool = True,
        wait_timeout: float = 30.0,
        stale_after: float | None = None,
        on_backend_error: Literal["call", "raise"] = "call",
    ) -> CachedDecorator:
        """See :func:`cachify_core.cached`."""
        from .cached import make_cached

        return make_cached(
            lambda: self, key, ttl, enc_dec, single_flight, wait_timeout, stale_after, on_backend_error
        )

    def lock(
        self,
        key: str,
        nowait: bool = True,
        timeout: float | None = None,
        exp: float | UnsetType | None = UNSET,
        *,
        auto_renew: bool = False,
    ) -> _lock:
        """See :class:`cachify_core.lock`."""
        from .lock import lock

        return lock(key, nowait, timeout, exp, auto_renew=auto_renew, _provider=lambda: self)

    def once(
        self,
        key: str,
        raise_on_locked: bool = False,
        return_on_locked: Any = None,
        *,
        auto_renew: bool = False,
    ) -> OnceDecorator:
        """See :func:`cachify_core.once`."""
        from .once import make_once

        return make_once(lambda: self, key, raise_on_locked, return_on_locked, auto_renew)

    def pool(
        self,
        key: str,
        max_size: int,
        slot_exp: float | UnsetType | None = UNSET,
        *,
        timeout: float | None = None,
        auto_renew: bool = False,
    ) -> _pool:
        """See :class:`cachify_core.pool`."""
        from .pool import pool

        return pool(key, max_size, slot_exp, timeout=timeout, auto_renew=auto_renew, _provider=lambda: self)

    def pooled(
        self,
        key: str,
        max_size: int,
        on_full: Callable[..., Any] | None = None,
        raise_on_full: bool = False,
        slot_exp: float | UnsetType | None = UNSET,
        *,
        auto_renew: bool = False,
    ) -> PooledDecorator:
        """See :func:`cachify_core.pooled`."""
        from .pool import make_pooled

        return make_pooled(lambda: self, key, max_size, on_full, raise_on_full, slot_exp, auto_renew)

    def rate_limit(
        self,
        key: str,
        rate: str | Sequence[str],
        *,
        burst: int | None = None,
        cost: int = 1,
        nowait: bool = False,
        timeout: float | None = None,
    ) -> _rate_limit:
        """See :class:`cachify_core.rate_limit`."""
        from .rate import rate_limit

        return rate_limit(
            key, rate, burst=burst, cost=cost, nowait=nowait, timeout=timeout, _provider=lambda: self
        )

    def rate_limited(
        self,
        key: str,
        rate: str | Sequence[str],
        on_limited: Callable[..., Any] | None = None,
        raise_on_limited: bool = False,
        *,
        burst: int | None = None,
        cost: int = 1,
        timeout: float | UnsetType | None = UNSET,
    ) -> RateLimitedDecorator:
        """See :func:`cachify_core.rate_limited`."""
        from .rate import make_rate_limited

        return make_rate_limited(lambda: self, key, rate, on_limited, raise_on_limited, burst, cost, timeout)


_global: Cachify | None = None


def get_cachify() -> Cachify:
    """The global instance; :class:`CachifyInitError` if ``init_cachify`` was never called."""
    if _global is None:
        raise CachifyInitError(_NOT_INITIALIZED)
    return _global


def init_cachify(
    sync_client: SyncClient | Any | None = None,
    async_client: AsyncClient | Any | None = None,
    default_lock_expiration: float | None = DEFAULT_LOCK_EXPIRATION_S,
    default_cache_ttl: float | None = None,
    prefix: str = "PYC-",
    lock_poll_interval: float = 0.1,
    default_pool_slot_expiration: float | None = 600,
    *,
    is_global: bool = True,
    url: str | None = None,
    serializer: str | Serializer | None = None,
    signing_key: bytes | str | None = None,
) -> Cachify:
    """Create a :class:`Cachify`; with ``is_global=True`` (default) it backs the top-level API.

    ``url="redis://host:6379/0"`` builds sync and async Redis clients on that server. Passing a
    single redis-py client derives its twin on the same server. ``serializer`` is ``'pickle'``
    (default), ``'json'``, ``'msgpack'`` or an object with ``dumps``/``loads``; ``signing_key``
    HMAC-signs every cache entry (see :mod:`cachify_core.serialization`). No I/O happens here.
    """
    global _global
    instance = Cachify(
        sync_client,
        async_client,
        default_lock_expiration,
        default_cache_ttl,
        prefix,
        lock_poll_interval,
        default_pool_slot_expiration,
        url=url,
        serializer=serializer,
        signing_key=signing_key,
    )
    if is_global:
        _global = instance
    return instance
