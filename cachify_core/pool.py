"""Concurrency pools: at most ``max_size`` holders of a key at once, across processes and hosts.

A pool is a set of slot leases, each owned by a token and ending at its expiry (Redis: a
sorted set scored by lease end, pruned inside the acquire script; memory: a dict). Acquire and
release are one round trip each on Redis (py-cachify: 4 each, behind a meta-lock). Each entry
of a ``with`` block or decorated call takes its own lease, so nesting one pool object or
calling a ``@pooled`` function repeatedly leaks nothing.

``pool(..., timeout=seconds)`` waits for a free slot, woken by a release within milliseconds;
without ``timeout`` a full pool raises at once, as in py-cachify.

``@pooled(key_template, max_size)`` keys each call by its arguments; ``pool(...).pooled()``
(py-cachify's method) makes every call of the decorated functions share that one pool. Both
are one decorator underneath. Unlike py-cachify's, neither turns a ``CachifyPoolFullError``
raised *inside* the function into ``on_full``: only the call's own slot decides that.
``pool(...).waiting()`` / ``awaiting()`` show the pool's waiting room (deliveries parked until
a slot frees; see :mod:`cachify_core.backends.base`): parked count, oldest wait, hand-overs.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from . import leases
from .backends.base import RoomStats
from .errors import CachifyBackendError, CachifyPoolFullError
from .instance import Cachify, get_cachify, seconds_to_ms
from .keys import KeyTemplate
from .lock import Held
from .metrics import events
from .protocols import UNSET, UnsetType
from .steps import Steps, acquire_steps, give_back_on_failure, run_async, run_blocking
from .tokens import new_token
from .waiting import WaitPlan
from .wrapping import AsyncPoolWrappedF, HolderStacks, SyncPoolWrappedF, attach, is_coroutine_function

__all__ = ["PooledDecorator", "RoomStats", "make_pooled", "pool", "pooled"]

logger = logging.getLogger("cachify")

P = ParamSpec("P")
R = TypeVar("R")
_Pl = TypeVar("_Pl", bound="pool")


def full_message(display_key: str, max_size: int) -> str:
    return f"{display_key} is full (max_size={max_size})"


def _check_max_size(key: str, max_size: object) -> int:
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
        raise ValueError(f"pool {key!r}: max_size must be an int >= 1, got {max_size!r}")
    return max_size


def _slot_ttl_ms(exp_ms: int | UnsetType | None, c: Cachify) -> int | None:
    return c.default_pool_slot_expiration_ms if isinstance(exp_ms, UnsetType) else exp_ms


def _warn_lost(key: str) -> None:
    logger.warning(
        "cachify: pool slot of %s had expired before its holder released it "
        "(raise slot_exp if the work outlives it)",
        key,
    )


def _take_steps(key: str, token: str, max_size: int, ttl_ms: int | None, plan: WaitPlan) -> Steps[bool]:
    return acquire_steps(
        lambda waiting: lambda b: b.pool_acquire(key, token, max_size, ttl_ms, waiting), key, plan
    )


def take_slot(
    c: Cachify,
    key: str,
    token: str,
    max_size: int,
    ttl_ms: int | None,
    plan: WaitPlan | None,
    label: str = "",
) -> bool:
    """Lease a slot for ``token``: one try, or wait per ``plan`` (1 round trip per try).
    ``label``: the pool's key as declared, for the metrics."""
    backend = c.sync_backend
    if plan is None:
        got = backend.pool_acquire(key, token, max_size, ttl_ms, False)
    else:
        started = events.now()
        got = run_blocking(_take_steps(key, token, max_size, ttl_ms, plan), backend)
        if events.sink is not None:
            events.sink.waited("pool", label, "", events.now() - started)
    if events.sink is not None:
        _report(c, key, token, label, got)
    return got


def _report(c: Cachify, key: str, token: str, label: str, got: bool) -> None:
    assert events.sink is not None
    if got:
        events.sink.acquired("pool", label, "", token, c, key)
    else:
        events.sink.count("denied", "pool", label, "")


async def atake_slot(
    c: Cachify,
    key: str,
    token: str,
    max_size: int,
    ttl_ms: int | None,
    plan: WaitPlan | None,
    label: str = "",
) -> bool:
    backend = c.async_backend
    try:
        if plan is None:
            got = await backend.pool_acquire(key, token, max_size, ttl_ms, False)
        else:
            started = events.now()
            got = await run_async(_take_steps(key, token, max_size, ttl_ms, plan), backend)
            if events.sink is not None:
                events.sink.waited("pool", label, "", events.now() - started)
        if events.sink is not None:
            _report(c, key, token, label, got)
        return got
    except CachifyBackendError:
        raise  # the server is unreachable: a give-back would only wait out another timeout
    except BaseException:
        # Cancelled after the server may have granted it: give back whatever this token holds.
        await give_back_on_failure(backend.pool_release(key, token))
        raise


def give_back(c: Cachify, key: str, token: str, lease: leases.Lease | None = None, label: str = "") -> None:
    leases.end(lease)
    ok = c.sync_backend.pool_release(key, token)
    if events.sink is not None:
        events.sink.released("pool", label, "", token, ok)
    if not ok:
        _warn_lost(key)


async def agive_back(
    c: Cachify, key: str, token: str, lease: leases.Lease | None = None, label: str = ""
) -> None:
    leases.end(lease)
    ok = await c.async_backend.pool_release(key, token)
    if events.sink is not None:
        events.sink.released("pool", label, "", token, ok)
    if not ok:
        _warn_lost(key)


class pool(HolderStacks[Held]):
    """A pool of ``max_size`` slots on ``key``, entered with ``with`` or ``async with``.

    ``slot_exp`` is a slot's lease in seconds (omitted: ``default_pool_slot_expiration``;
    ``None``: never expires, so a crashed holder's slot stays taken). ``timeout`` is how long
    to wait for a free slot (``None``: do not wait) before :class:`CachifyPoolFullError`.
    ``auto_renew=True`` renews the slot's lease every third of ``slot_exp`` while held, so a
    long holder keeps its slot and a crashed one frees it within ``slot_exp``.

    Round trips on Redis: enter 1 (plus 1 per wake-up while waiting), exit 1, size 1.
    """

    __slots__ = (
        "_auto_renew",
        "_exp_ms",
        "_key",
        "_max_size",
        "_provider",
        "_timeout",
    )

    def __init__(
        self,
        key: str,
        max_size: int,
        slot_exp: float | UnsetType | None = UNSET,
        *,
        timeout: float | None = None,
        auto_renew: bool = False,
        _provider: Callable[[], Cachify] = get_cachify,
    ) -> None:
        if not isinstance(key, str):
            raise TypeError(f"pool key must be a str, got {type(key).__name__}")
        self._max_size = _check_max_size(key, max_size)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
        ):
            raise ValueError(
                f"pool {key!r}: timeout must be a number of seconds >= 0 or None, got {timeout!r}"
            )
        self._exp_ms = (
            UNSET if isinstance(slot_exp, UnsetType) else seconds_to_ms(slot_exp, f"pool {key!r} slot_exp")
        )
        self._key = key
        self._timeout = timeout
        self._auto_renew = auto_renew
        self._provider = _provider
        self._stacks = {}  # HolderStacks: this object's live acquisitions per thread/task

    @property
    def max_size(self) -> int:
        return self._max_size

    def _full_key(self, c: Cachify) -> str:
        return f"{c.prefix}{self._key}-pool"

    def _plan(self, c: Cachify) -> WaitPlan | None:
        return None if self._timeout is None else WaitPlan(self._timeout, c.lock_poll_interval)

    def _full(self) -> CachifyPoolFullError:
        message = full_message(self._key, self._max_size)
        logger.debug(message)
        return CachifyPoolFullError(message)

    def __enter__(self: _Pl) -> _Pl:
        c = self._provider()
        key, token, ttl_ms = self._full_key(c), new_token(), _slot_ttl_ms(self._exp_ms, c)
        if not take_slot(c, key, token, self._max_size, ttl_ms, self._plan(c), self._key):
            raise self._full()
        lease = leases.begin(c, "pool", key, token, ttl_ms, self._auto_renew, False)
        self.push(False, (c, key, token, lease))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        held = self.pop(False)
        if held is not None:
            give_back(held[0], held[1], held[2], held[3], self._key)

    def size(self) -> int:
        """Slots taken right now (1 round trip)."""
        c = self._provider()
        return c.sync_backend.pool_size(self._full_key(c))

    async def __aenter__(self: _Pl) -> _Pl:
        c = self._provider()
        key, token, ttl_ms = self._full_key(c), new_token(), _slot_ttl_ms(self._exp_ms, c)
        if not await atake_slot(c, key, token, self._max_size, ttl_ms, self._plan(c), self._key):
            raise self._full()
        lease = leases.begin(c, "pool", key, token, ttl_ms, self._auto_renew, True)
        self.push(True, (c, key, token, lease))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        held = self.pop(True)
        if held is not None:
            await agive_back(held[0], held[1], held[2], held[3], self._key)

    async def asize(self) -> int:
        c = self._provider()
        return await c.async_backend.pool_size(self._full_key(c))

    def pooled(
        self, on_full: Callable[..., Any] | None = None, raise_on_full: bool = False
    ) -> PooledDecorator:
        """Decorate functions whose every call takes a slot of this pool (py-cachify's
        ``pool(...).pooled``): the functions share this pool's key, ``max_size``, ``slot_exp``,
        ``timeout``, ``auto_renew`` and instance with each other and with ``with`` blocks on it.

        A call finding the pool full (after waiting ``timeout``, if one was given) raises
        :class:`CachifyPoolFullError` if ``raise_on_full``, else returns
        ``on_full(*args, **kwargs)`` (awaited if it returns an awaitable), else ``None``.
        The key is this pool's, not a template: every call counts against the same slots.
        The function gets ``size()``, sync or async like itself.
        """
        key = self._key

        def keying(_func: Callable[..., Any]) -> _KeyOf:
            fixed = (f"{key}-pool", key)
            return lambda _args, _kwargs: fixed

        return _pooled_decorator(
            self._provider,
            key,
            keying,
            self._max_size,
            on_full,
            raise_on_full,
            self._exp_ms,
            self._auto_renew,
            self._plan,
        )

    def waiting(self) -> RoomStats:
        """The pool's waiting room right now (1 round trip): ``parked`` deliveries waiting for a
        slot, ``oldest_wait_s`` of the longest-waiting one, ``handed`` hand-overs on their way
        (each holding a reserved slot, counted by ``size()`` too) and ``timed`` entries. All zero
        on a backend without waiting rooms (custom clients)."""
        c = self._provider()
        return c.sync_backend.room_stats(self._full_key(c))

    async def awaiting(self) -> RoomStats:
        """The asyncio twin of :meth:`waiting`."""
        c = self._provider()
        return await c.async_backend.room_stats(self._full_key(c))


class PooledDecorator(Protocol):
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncPoolWrappedF[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncPoolWrappedF[P, R]: ...


def pooled(
    key: str,
    max_size: int,
    on_full: Callable[..., Any] | None = None,
    raise_on_full: bool = False,
    slot_exp: float | UnsetType | None = UNSET,
    *,
    auto_renew: bool = False,
) -> PooledDecorator:
    """Run at most ``max_size`` calls per ``key`` (a template over the arguments) at once.

    A call finding the pool full raises :class:`CachifyPoolFullError` if ``raise_on_full``,
    else returns ``on_full(*args, **kwargs)`` (awaited if it returns an awaitable), else
    ``None``. The function gets ``size(*args, **kwargs)``, sync or async like itself.
    ``auto_renew=True`` renews a running call's slot lease (see :class:`pool`).
    """
    return make_pooled(get_cachify, key, max_size, on_full, raise_on_full, slot_exp, auto_renew)


def make_pooled(
    provider: Callable[[], Cachify],
    key: str,
    max_size: int,
    on_full: Callable[..., Any] | None,
    raise_on_full: bool,
    slot_exp: float | UnsetType | None,
    auto_renew: bool = False,
) -> PooledDecorator:
    _check_max_size(key, max_size)
    exp_ms = UNSET if isinstance(slot_exp, UnsetType) else seconds_to_ms(slot_exp, f"pooled {key!r} slot_exp")

    def keying(func: Callable[..., Any]) -> Callable[[tuple[Any, ...], dict[str, Any]], tuple[str, str]]:
        template = KeyTemplate(key, func, "pool")

        def key_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
            formatted = template.format(args, kwargs)
            return formatted, formatted

        return key_of

    return _pooled_decorator(
        provider, key, keying, max_size, on_full, raise_on_full, exp_ms, auto_renew, lambda _c: None
    )


#: What a pooled function's key is for one call: ``(key without prefix, key shown in messages)``.
_KeyOf = Callable[[tuple[Any, ...], dict[str, Any]], tuple[str, str]]


def _pooled_decorator(
    provider: Callable[[], Cachify],
    name: str,
    keying: Callable[[Callable[..., Any]], _KeyOf],
    max_size: int,
    on_full: Callable[..., Any] | None,
    raise_on_full: bool,
    exp_ms: int | UnsetType | None,
    auto_renew: bool,
    plan_of: Callable[[Cachify], WaitPlan | None],
) -> PooledDecorator:
    """The decorator behind ``@pooled`` and ``pool(...).pooled()``; they differ only in how a
    call's key is found (``keying``) and whether a call waits for a slot (``plan_of``)."""
    if on_full is not None and not callable(on_full):
        raise TypeError(f"pooled {name!r}: on_full must be callable, got {type(on_full).__name__}")

    def when_full(display_key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        message = full_message(display_key, max_size)
        logger.debug(message)
        if raise_on_full:
            raise CachifyPoolFullError(message)
        return None if on_full is None else on_full(*args, **kwargs)

    def decorator(func: Callable[..., Any]) -> Any:
        key_of = keying(func)

        if is_coroutine_function(func):

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                c = provider()
                key, display_key = key_of(args, kwargs)
                full_key, token, ttl_ms = c.prefix + key, new_token(), _slot_ttl_ms(exp_ms, c)
                if not await atake_slot(c, full_key, token, max_size, ttl_ms, plan_of(c), name):
                    result = when_full(display_key, args, kwargs)
                    return await result if inspect.isawaitable(result) else result
                lease = leases.begin(c, "pool", full_key, token, ttl_ms, auto_renew, True)
                try:
                    return await func(*args, **kwargs)
                finally:
                    await agive_back(c, full_key, token, lease, name)

            async def asize(*args: Any, **kwargs: Any) -> int:
                c = provider()
                return await c.async_backend.pool_size(c.prefix + key_of(args, kwargs)[0])

            return attach(async_wrapper, func, size=asize)

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            c = provider()
            key, display_key = key_of(args, kwargs)
            full_key, token, ttl_ms = c.prefix + key, new_token(), _slot_ttl_ms(exp_ms, c)
            if not take_slot(c, full_key, token, max_size, ttl_ms, plan_of(c), name):
                return when_full(display_key, args, kwargs)
            lease = leases.begin(c, "pool", full_key, token, ttl_ms, auto_renew, False)
            try:
                return func(*args, **kwargs)
            finally:
                give_back(c, full_key, token, lease, name)

        def size(*args: Any, **kwargs: Any) -> int:
            c = provider()
            return c.sync_backend.pool_size(c.prefix + key_of(args, kwargs)[0])

        return attach(sync_wrapper, func, size=size)

    return decorator
