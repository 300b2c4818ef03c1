"""``@cached``: store a function's result under a key built from its arguments.

TTL precedence (py-cachify 3.1's): an explicit ``ttl`` wins, ``ttl=None`` never expires,
omitted ``ttl`` uses the instance's ``default_cache_ttl`` (``None``: no expiry).
``None`` results are cached like any other value (py-cachify re-runs the function for them).

Beyond py-cachify:

* **Single flight** (on by default): when many callers — threads, tasks, processes — miss the
  same key at once, one computes and the others wait for its result, woken when it is stored
  (through a fill lock, ``<key>-fill<epoch>``, renewed while the computation runs). A waiter
  that has waited ``wait_timeout`` seconds computes itself. A hit costs nothing extra.
* **Management**, named as in cachier / async-cache: ``reset(*args)`` (one entry, through
  stacked layers), ``clear_cache()`` (every entry of the function, one O(1) operation: the
  namespace's generation moves on, so old entries become misses at once; their memory is freed
  when they expire or are overwritten — give entries a TTL where keys are unbounded),
  ``precache_value(*args, value_to_cache=...)``, ``clear_being_calculated()`` (new misses stop
  waiting for computations in flight).
* **Serve stale while recomputing** (``stale_after=seconds``): an entry older than that is
  returned at once while one background refresh recomputes it.
* **Fail open** (``on_backend_error="call"``, default): if the backend is down the function runs
  and the error is logged; ``"raise"`` propagates :class:`CachifyBackendError`. A result that
  cannot be serialized is logged (naming function and key) and returned uncached.

Round trips on Redis: hit 1; miss 2 without single flight, 5 with it (lookup, fill lock,
re-check, store, release); ``reset`` and ``clear_cache`` 1 per cached layer;
``precache_value`` 2 (it reads the generation it stores under).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, overload

from . import leases
from .backends import CacheRead
from .errors import CachifyBackendError
from .instance import Cachify, get_cachify, seconds_to_ms
from .keys import KeyTemplate, func_name
from .metrics import events
from .protocols import UNSET, Decoder, Encoder, UnsetType
from .serialization import CachifySerializationError
from .steps import Steps, acquire_steps, run_async, run_blocking
from .tokens import new_token
from .waiting import WaitPlan
from .wrapping import AsyncResetWrappedF, SyncResetWrappedF, attach, is_coroutine_function

__all__ = ["DEFAULT_WAIT_TIMEOUT_S", "CachedDecorator", "CachedFunction", "cached", "make_cached"]

logger = logging.getLogger("cachify")

P = ParamSpec("P")
R = TypeVar("R")

#: How long a caller waits for another's computation of the same key before computing itself:
#: longer than most computations worth caching, short enough that a stuck one is routed around.
DEFAULT_WAIT_TIMEOUT_S = 30.0

OnBackendError = Literal["call", "raise"]


class CachedDecorator(Protocol):
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncResetWrappedF[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncResetWrappedF[P, R]: ...


def cached(
    key: str,
    ttl: float | UnsetType | None = UNSET,
    enc_dec: tuple[Encoder, Decoder] | None = None,
    *,
    single_flight: bool = True,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT_S,
    stale_after: float | None = None,
    on_backend_error: OnBackendError = "call",
) -> CachedDecorator:
    """Cache the decorated function's results under ``key`` (a template over its arguments).

    ``ttl`` in seconds; ``enc_dec=(encoder, decoder)`` transforms values around serialization.
    The wrapped function gets ``reset``, ``clear_cache``, ``precache_value`` and
    ``clear_being_calculated``, sync or async like itself (see the module docstring).
    """
    return make_cached(
        get_cachify, key, ttl, enc_dec, single_flight, wait_timeout, stale_after, on_backend_error
    )


@dataclass(frozen=True)
class _Settings:
    ttl_ms: int | UnsetType | None
    encoder: Encoder | None
    decoder: Decoder | None
    single_flight: bool
    wait_timeout_s: float
    stale_after_s: float | None
    on_backend_error: OnBackendError


def _settings(
    key: str,
    ttl: float | UnsetType | None,
    enc_dec: tuple[Encoder, Decoder] | None,
    single_flight: bool,
    wait_timeout: float,
    stale_after: float | None,
    on_backend_error: str,
) -> _Settings:
    where = f"cached {key!r}"
    if enc_dec is not None and (
        not isinstance(enc_dec, tuple) or len(enc_dec) != 2 or not all(map(callable, enc_dec))
    ):
        raise TypeError(f"{where}: enc_dec must be a tuple (encoder, decoder) of two callables")
    if on_backend_error not in ("call", "raise"):
        raise ValueError(f"{where}: on_backend_error must be 'call' or 'raise', got {on_backend_error!r}")
    seconds_to_ms(wait_timeout, f"{where} wait_timeout")
    seconds_to_ms(stale_after, f"{where} stale_after")
    return _Settings(
        ttl_ms=UNSET if isinstance(ttl, UnsetType) else seconds_to_ms(ttl, f"{where} ttl"),
        encoder=None if enc_dec is None else enc_dec[0],
        decoder=None if enc_dec is None else enc_dec[1],
        single_flight=bool(single_flight),
        wait_timeout_s=float(wait_timeout),
        stale_after_s=stale_after,
        on_backend_error=on_backend_error,  # type: ignore[arg-type]
    )


_MISS = object()


class _Stale:
    """A hit older than ``stale_after``: served, and refreshed in the background."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class CachedFunction:
    """The cache of one decorated function: every operation, as steps (see :mod:`steps`).

    Exposed on the wrapper as ``__cachify__`` so ``@invalidates`` can reach it from sync or
    async code whatever the cached function's own kind.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        template: KeyTemplate,
        provider: Callable[[], Cachify],
        settings: _Settings,
    ) -> None:
        self.func = func
        self.template = template
        self.provider = provider
        self.settings = settings
        self.is_async = is_coroutine_function(func)
        self.inner: CachedFunction | None = getattr(func, "__cachify__", None)
        self._refreshing: set[asyncio.Task[Any]] = set()
        self._refreshing_keys: set[tuple[str, str]] = set()  # (namespace, key) being refreshed here
        self._refresh_mutex = threading.Lock()

    # -- no I/O --------------------------------------------------------------------------
    def namespace(self, c: Cachify) -> str:
        return self.template.namespace(c.prefix)

    def _ttl_ms(self, c: Cachify) -> int | None:
        ttl = self.settings.ttl_ms
        return c.default_cache_ttl_ms if isinstance(ttl, UnsetType) else ttl

    def _where(self, key: str) -> str:
        return f"{func_name(self.func)} key {key!r}"

    def _encode(self, c: Cachify, key: str, value: Any) -> bytes:
        enc = self.settings.encoder
        return c.codec.pack(value if enc is None else enc(value), self._where(key))

    def _decode(self, c: Cachify, key: str, raw: bytes | None) -> Any:
        """The cached value of a lookup, ``_Stale(value)`` past ``stale_after``, or ``_MISS``."""
        if raw is None:
            return _MISS
        entry = c.codec.unpack(raw, lambda: self._where(key))
        if entry is None:
            return _MISS
        dec = self.settings.decoder
        value = entry.value if dec is None else dec(entry.value)
        stale_after = self.settings.stale_after_s
        if stale_after is not None and entry.age_s() > stale_after:
            return _Stale(value)
        return value

    def fresh_hit(self, c: Cachify, key: str, read: CacheRead) -> Any:
        """The value of a fresh hit (the wrappers' fast path), else ``_MISS``."""
        value = self._decode(c, key, read.value)
        return _MISS if isinstance(value, _Stale) else value

    def lookup(self, c: Cachify, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
        """(namespace, entry key) of one call (no I/O)."""
        return self.template.namespace(c.prefix), self.template.format(args, kwargs)

    # -- the call, as steps -------------------------------------------------------------
    def call_steps(
        self,
        c: Cachify,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        asyncio_: bool,
        read: CacheRead | None = None,
    ) -> Steps[Any]:
        """One call. ``read`` is the lookup the wrapper already made (its fast path for hits)."""
        ns, key = self.lookup(c, args, kwargs)
        if read is None:
            try:
                read = yield lambda b: b.cache_get(ns, key)
            except CachifyBackendError as exc:
                return (yield from self._fail_open(exc, args, kwargs))
        value = self._decode(c, key, read.value)
        if events.sink is not None:  # a stale entry is a hit (served); a miss runs the function
            events.sink.count(
                "cache_miss" if value is _MISS else "cache_hit", "cache", self.template.template, ""
            )
        if isinstance(value, _Stale):
            self._refresh_in_background(c, args, kwargs, asyncio_)
            return value.value
        if value is not _MISS:
            return value
        if not self.settings.single_flight:
            return (yield from self._compute_steps(c, ns, key, read.gen, args, kwargs))
        fill_key, token = f"{c.prefix}{key}-fill{read.fill}", new_token()
        fill_ttl = c.default_lock_expiration_ms or round(DEFAULT_WAIT_TIMEOUT_S * 1000)
        plan = WaitPlan(self.settings.wait_timeout_s, c.lock_poll_interval)
        attempt = _fill_attempt(fill_key, token, fill_ttl)
        try:
            filled_by_us = yield from acquire_steps(attempt, fill_key, plan)
        except CachifyBackendError as exc:
            return (yield from self._fail_open(exc, args, kwargs))
        except BaseException:
            # Cancelled mid-acquire: the fill lock may be ours; left alone it would make every
            # caller of this key wait out wait_timeout.
            with contextlib.suppress(Exception):
                yield from self._release_fill_steps(fill_key, token, None)
            raise
        if not filled_by_us:
            logger.info(
                "cachify: %s: waited %.1fs for another computation; computing",
                self._where(key),
                self.settings.wait_timeout_s,
            )
            return (yield from self._compute_steps(c, ns, key, read.gen, args, kwargs))
        lease = leases.begin(c, "lock", fill_key, token, fill_ttl, True, asyncio_)
        try:
            try:
                read = yield lambda b: b.cache_get(ns, key)  # stored while we waited?
            except CachifyBackendError as exc:
                return (yield from self._fail_open(exc, args, kwargs))
            value = self._decode(c, key, read.value)
            if value is not _MISS and not isinstance(value, _Stale):
                return value
            return (yield from self._compute_steps(c, ns, key, read.gen, args, kwargs))
        finally:
            yield from self._release_fill_steps(fill_key, token, lease)

    def _release_fill_steps(self, fill_key: str, token: str, lease: leases.Lease | None) -> Steps[None]:
        """Give the fill lock back. A failure here never costs the caller its result: the lock
        expires by itself, and waiters then compute."""
        leases.end(lease)
        try:
            yield lambda b: b.lock_release(fill_key, token)
        except CachifyBackendError as exc:
            logger.error("cachify: %s: fill lock not released (it will expire): %s", fill_key, exc)

    def _compute_steps(
        self, c: Cachify, ns: str, key: str, gen: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Steps[Any]:
        func = self.func
        result = yield lambda _b: func(*args, **kwargs)
        try:
            data = self._encode(c, key, result)
        except CachifySerializationError as exc:
            logger.error("cachify: %s; returned uncached", exc)
            return result
        ttl = self._ttl_ms(c)
        try:
            yield lambda b: b.cache_set(ns, key, data, ttl, gen)
        except CachifyBackendError as exc:
            if events.sink is not None:
                events.sink.count("cache_error", "cache", self.template.template, "")
            if self.settings.on_backend_error == "raise":
                raise
            logger.error("cachify: %s: result not stored: %s", self._where(key), exc)
        return result

    def _fail_open(
        self, exc: CachifyBackendError, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Steps[Any]:
        if events.sink is not None:
            events.sink.count("cache_error", "cache", self.template.template, "")
        if self.settings.on_backend_error == "raise":
            raise exc
        logger.error("cachify: %s: cache unavailable, calling it directly: %s", func_name(self.func), exc)
        func = self.func
        return (yield lambda _b: func(*args, **kwargs))

    def _refresh_steps(
        self, c: Cachify, args: tuple[Any, ...], kwargs: dict[str, Any], asyncio_: bool
    ) -> Steps[None]:
        """One background recomputation of a stale entry, unless another is already running."""
        ns, key = self.lookup(c, args, kwargs)
        read = yield lambda b: b.cache_get(ns, key)
        fill_key, token = f"{c.prefix}{key}-fill{read.fill}", new_token()
        fill_ttl = c.default_lock_expiration_ms or round(DEFAULT_WAIT_TIMEOUT_S * 1000)
        if not (yield _fill_attempt(fill_key, token, fill_ttl)(False)):
            return  # another refresh (or a first computation) is running
        lease = leases.begin(c, "lock", fill_key, token, fill_ttl, True, asyncio_)
        try:
            read = yield lambda b: b.cache_get(ns, key)  # refreshed by someone just before us?
            current = self._decode(c, key, read.value)
            if current is _MISS or isinstance(current, _Stale):
                yield from self._compute_steps(c, ns, key, read.gen, args, kwargs)
        finally:
            yield from self._release_fill_steps(fill_key, token, lease)

    def _refresh_in_background(
        self, c: Cachify, args: tuple[Any, ...], kwargs: dict[str, Any], asyncio_: bool
    ) -> None:
        """Start one refresh of a stale entry unless this process already runs one for it."""
        entry = self.lookup(c, args, kwargs)
        with self._refresh_mutex:
            if entry in self._refreshing_keys:
                return
            self._refreshing_keys.add(entry)
        try:
            self._start_refresh(c, args, kwargs, asyncio_, entry)
        except BaseException:
            self._refresh_done(entry)
            raise

    def _refresh_done(self, entry: tuple[str, str]) -> None:
        with self._refresh_mutex:
            self._refreshing_keys.discard(entry)

    def _start_refresh(
        self,
        c: Cachify,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        asyncio_: bool,
        entry: tuple[str, str],
    ) -> None:
        where = func_name(self.func)
        if asyncio_:
            task = asyncio.get_running_loop().create_task(
                self._log_failure(
                    run_async(self._refresh_steps(c, args, kwargs, True), c.async_backend), where
                )
            )
            self._refreshing.add(task)
            task.add_done_callback(self._refreshing.discard)
            task.add_done_callback(lambda _t: self._refresh_done(entry))
            return

        def refresh() -> None:
            try:
                run_blocking(self._refresh_steps(c, args, kwargs, False), c.sync_backend)
            except Exception:
                logger.exception("cachify: background refresh of %s failed", where)
            finally:
                self._refresh_done(entry)

        threading.Thread(target=refresh, name=f"cachify-refresh:{where}", daemon=True).start()

    @staticmethod
    async def _log_failure(coro: Coroutine[Any, Any, None], where: str) -> None:
        try:
            await coro
        except Exception:
            logger.exception("cachify: background refresh of %s failed", where)

    # -- management, as steps -------------------------------------------------------------
    def reset_steps(self, c: Cachify, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Steps[None]:
        ns, key = self.lookup(c, args, kwargs)
        yield lambda b: b.cache_delete(ns, key)

    def clear_steps(self, c: Cachify) -> Steps[None]:
        ns = self.namespace(c)
        yield lambda b: b.cache_clear(ns)

    def clear_fills_steps(self, c: Cachify) -> Steps[None]:
        ns = self.namespace(c)
        yield lambda b: b.cache_clear_fills(ns)

    def precache_steps(
        self, c: Cachify, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any
    ) -> Steps[None]:
        ns, key = self.lookup(c, args, kwargs)
        read = yield lambda b: b.cache_get(ns, key)
        data, ttl = self._encode(c, key, value), self._ttl_ms(c)
        yield lambda b: b.cache_set(ns, key, data, ttl, read.gen)

    # -- drivers (the only sync/async twins) ----------------------------------------------
    def reset(self, *args: Any, **kwargs: Any) -> None:
        """Blocking reset of this layer and every cached layer under it."""
        c = self.provider()
        run_blocking(self.reset_steps(c, args, kwargs), c.sync_backend)
        if self.inner is not None:
            self.inner.reset(*args, **kwargs)

    async def areset(self, *args: Any, **kwargs: Any) -> None:
        c = self.provider()
        await run_async(self.reset_steps(c, args, kwargs), c.async_backend)
        if self.inner is not None:
            await self.inner.areset(*args, **kwargs)

    def clear(self) -> None:
        """Blocking ``clear_cache`` of this layer and the layers under it."""
        c = self.provider()
        run_blocking(self.clear_steps(c), c.sync_backend)
        if self.inner is not None:
            self.inner.clear()

    async def aclear(self) -> None:
        c = self.provider()
        await run_async(self.clear_steps(c), c.async_backend)
        if self.inner is not None:
            await self.inner.aclear()

    def clear_fills(self) -> None:
        c = self.provider()
        run_blocking(self.clear_fills_steps(c), c.sync_backend)

    async def aclear_fills(self) -> None:
        c = self.provider()
        await run_async(self.clear_fills_steps(c), c.async_backend)

    def precache(self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> None:
        c = self.provider()
        run_blocking(self.precache_steps(c, args, kwargs, value), c.sync_backend)

    async def aprecache(self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> None:
        c = self.provider()
        await run_async(self.precache_steps(c, args, kwargs, value), c.async_backend)


def _fill_attempt(fill_key: str, token: str, ttl_ms: int) -> Callable[[float], Callable[[Any], Any]]:
    def attempt(waiting: float) -> Callable[[Any], Any]:
        return lambda b: b.lock_acquire(fill_key, token, ttl_ms, waiting)

    return attempt


def make_cached(
    provider: Callable[[], Cachify],
    key: str,
    ttl: float | UnsetType | None,
    enc_dec: tuple[Encoder, Decoder] | None,
    single_flight: bool = True,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT_S,
    stale_after: float | None = None,
    on_backend_error: OnBackendError = "call",
) -> CachedDecorator:
    settings = _settings(key, ttl, enc_dec, single_flight, wait_timeout, stale_after, on_backend_error)

    def decorator(func: Callable[..., Any]) -> Any:
        cf = CachedFunction(func, KeyTemplate(key, func, "cached"), provider, settings)

        if cf.is_async:

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                c = provider()
                ns, key = cf.lookup(c, args, kwargs)
                read: CacheRead | None = None
                try:
                    read = await c.async_backend.cache_get(ns, key)
                except CachifyBackendError:
                    pass  # call_steps looks again and applies on_backend_error
                else:
                    value = cf.fresh_hit(c, key, read)
                    if value is not _MISS:
                        if events.sink is not None:
                            events.sink.count("cache_hit", "cache", cf.template.template, "")
                        return value
                return await run_async(cf.call_steps(c, args, kwargs, True, read), c.async_backend)

            async def aprecache_value(*args: Any, value_to_cache: Any, **kwargs: Any) -> None:
                await cf.aprecache(args, kwargs, value_to_cache)

            wrapper = attach(
                async_wrapper,
                func,
                reset=cf.areset,
                clear_cache=cf.aclear,
                clear_being_calculated=cf.aclear_fills,
                precache_value=aprecache_value,
            )
        else:

            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                c = provider()
                ns, key = cf.lookup(c, args, kwargs)
                read: CacheRead | None = None
                try:
                    read = c.sync_backend.cache_get(ns, key)
                except CachifyBackendError:
                    pass  # call_steps looks again and applies on_backend_error
                else:
                    value = cf.fresh_hit(c, key, read)
                    if value is not _MISS:
                        if events.sink is not None:
                            events.sink.count("cache_hit", "cache", cf.template.template, "")
                        return value
                return run_blocking(cf.call_steps(c, args, kwargs, False, read), c.sync_backend)

            def precache_value(*args: Any, value_to_cache: Any, **kwargs: Any) -> None:
                cf.precache(args, kwargs, value_to_cache)

            wrapper = attach(
                sync_wrapper,
                func,
                reset=cf.reset,
                clear_cache=cf.clear,
                clear_being_calculated=cf.clear_fills,
                precache_value=precache_value,
            )
        wrapper.__cachify__ = cf
        return wrapper

    return decorator
