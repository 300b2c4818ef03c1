"""Rate limits: at most so many calls per period per key, across processes and hosts (GCRA).

``rate_limit("tenant-{tenant_id}", "10/s")`` admits 10 calls at once from idle (``burst``,
default: the count) and then one every 100 ms, whoever makes them: the state is one
theoretical arrival time per limit on the backend (see :mod:`cachify_core.rates` for the
rate strings and the exact bound, :mod:`cachify_core.backends.base` for the primitive).
``rate`` may list several limits (``["10/s", "500/h"]``): a call must fit all of them, and
one that does not is counted by none.

A rate limit counts *starts*: leaving a ``with`` block gives nothing back. A call that is
not admitted raises :class:`CachifyRateLimitedError` with ``nowait=True``; otherwise it sleeps
exactly until the time the backend reported and tries again (``timeout`` bounds the whole
wait, and a call that the reported time shows cannot make it raises at once, without sleeping).

Round trips on Redis: 1 per check whatever the number of limits (one script, one hash tag per
limiter, so it runs on Redis Cluster too), plus 1 per retry while waiting; ``retry_after`` and
``remaining`` 1 each and count nothing. Custom clients cannot rate-limit (``CachifyInitError``).

An asyncio call cancelled while its check is in flight may have been counted without running:
a limiter can under-use its rate, never exceed it.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from .backends.base import RateCheck, RateLimit
from .errors import CachifyRateLimitedError
from .instance import Cachify, get_cachify
from .keys import KeyTemplate
from .metrics import events
from .protocols import UNSET, UnsetType
from .rates import Rate, rate_limits
from .steps import Sleep, Steps, run_async, run_blocking
from .wrapping import attach, is_coroutine_function

__all__ = [
    "AsyncRateWrappedF",
    "RateLimitedDecorator",
    "SyncRateWrappedF",
    "make_rate_limited",
    "rate_limit",
    "rate_limited",
]

logger = logging.getLogger("cachify")

P = ParamSpec("P")
R = TypeVar("R")
_Rl = TypeVar("_Rl", bound="rate_limit")

_now = time.monotonic  # module-level so tests can fake the clock
_POSTFIX = "rate"


def _check_timeout(where: str, timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ValueError(f"{where}: timeout must be a number of seconds >= 0 or None, got {timeout!r}")
    return float(timeout)


class _Limiter:
    """The validated limits of one limiter and the waiting admission over them (no I/O here)."""

    __slots__ = ("cost", "label", "limits", "rates", "text")

    def __init__(
        self, where: str, rate: str | Sequence[str], burst: int | None, cost: int, label: str = ""
    ) -> None:
        rates, limits = rate_limits(where, rate, burst, cost)
        self.label = label  # the key as declared (a template for the decorators), for metrics
        self.rates: tuple[Rate, ...] = rates
        self.limits: tuple[RateLimit, ...] = limits
        self.cost = cost
        self.text = ", ".join(str(r) for r in rates)

    def admit_steps(self, key: str, wait_s: float | None) -> Steps[RateCheck]:
        """Check and count; while refused, sleep the reported time and retry, within ``wait_s``
        (``None``: no bound; 0: no waiting). Returns the last check (``allowed`` or not)."""
        limits, cost = self.limits, self.cost
        deadline = None if wait_s is None else _now() + wait_s
        while True:
            check: RateCheck = yield lambda b: b.rate_acquire(key, limits, cost, True)
            if check.allowed:
                return check
            delay_s = check.retry_after_ms / 1000
            if deadline is not None and _now() + delay_s > deadline:
                return check  # the server's own answer says it cannot be admitted in time
            yield Sleep(delay_s)

    def admit(self, c: Cachify, key: str, wait_s: float | None) -> RateCheck:
        if wait_s == 0:
            check = c.sync_backend.rate_acquire(key, self.limits, self.cost, True)
        else:
            check = run_blocking(self.admit_steps(key, wait_s), c.sync_backend)
        if events.sink is not None and not check.allowed:
            events.sink.count("rate_limited", "rate", self.label, "")
        return check

    async def aadmit(self, c: Cachify, key: str, wait_s: float | None) -> RateCheck:
        if wait_s == 0:
            check = await c.async_backend.rate_acquire(key, self.limits, self.cost, True)
        else:
            check = await run_async(self.admit_steps(key, wait_s), c.async_backend)
        if events.sink is not None and not check.allowed:
            events.sink.count("rate_limited", "rate", self.label, "")
        return check

    def limited(self, display_key: str, check: RateCheck) -> CachifyRateLimitedError:
        error = CachifyRateLimitedError(display_key, check.retry_after_ms / 1000, self.text)
        logger.debug("%s", error)
        return error


def _seconds(check: RateCheck) -> float:
    return 0.0 if check.allowed else check.retry_after_ms / 1000


class SyncRateWrappedF(Protocol[P, R]):
    __wrapped__: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def retry_after(self, *args: P.args, **kwargs: P.kwargs) -> float: ...

    def remaining(self, *args: P.args, **kwargs: P.kwargs) -> int: ...


class AsyncRateWrappedF(Protocol[P, R]):
    __wrapped__: Callable[P, Awaitable[R]]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...

    async def retry_after(self, *args: P.args, **kwargs: P.kwargs) -> float: ...

    async def remaining(self, *args: P.args, **kwargs: P.kwargs) -> int: ...


class RateLimitedDecorator(Protocol):
    """What ``rate_limited(...)`` returns, and what ``rate_limit(...)`` does called on a function."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncRateWrappedF[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncRateWrappedF[P, R]: ...


#: What a decorated call that is not admitted does: ``(instance, display key, check, args,
#: kwargs) -> result`` (or it raises).
_WhenLimited = Callable[[Cachify, str, RateCheck, tuple[Any, ...], dict[str, Any]], Any]


def _wrap(
    key_template: str,
    func: Callable[..., Any],
    provider: Callable[[], Cachify],
    limiter: _Limiter,
    wait_s: float | None,
    when_limited: _WhenLimited,
) -> Any:
    """``func`` checked against ``limiter`` on each call, its key a template over the arguments."""
    template = KeyTemplate(key_template, func, _POSTFIX)
    limits, cost, cut = limiter.limits, limiter.cost, -len(_POSTFIX) - 1

    if is_coroutine_function(func):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            c = provider()
            key = template.format(args, kwargs)
            check = await limiter.aadmit(c, c.prefix + key, wait_s)
            if not check.allowed:
                result = when_limited(c, key[:cut], check, args, kwargs)
                return await result if inspect.isawaitable(result) else result
            return await func(*args, **kwargs)

        async def aretry_after(*args: Any, **kwargs: Any) -> float:
            c = provider()
            full_key = c.prefix + template.format(args, kwargs)
            return _seconds(await c.async_backend.rate_acquire(full_key, limits, cost, False))

        async def aremaining(*args: Any, **kwargs: Any) -> int:
            c = provider()
            full_key = c.prefix + template.format(args, kwargs)
            return (await c.async_backend.rate_acquire(full_key, limits, cost, False)).remaining

        return attach(async_wrapper, func, retry_after=aretry_after, remaining=aremaining)

    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        c = provider()
        key = template.format(args, kwargs)
        check = limiter.admit(c, c.prefix + key, wait_s)
        if not check.allowed:
            return when_limited(c, key[:cut], check, args, kwargs)
        return func(*args, **kwargs)

    def retry_after(*args: Any, **kwargs: Any) -> float:
        c = provider()
        full_key = c.prefix + template.format(args, kwargs)
        return _seconds(c.sync_backend.rate_acquire(full_key, limits, cost, False))

    def remaining(*args: Any, **kwargs: Any) -> int:
        c = provider()
        full_key = c.prefix + template.format(args, kwargs)
        return c.sync_backend.rate_acquire(full_key, limits, cost, False).remaining

    return attach(sync_wrapper, func, retry_after=retry_after, remaining=remaining)


class rate_limit:
    """A rate limit on ``key``: a ``with`` / ``async with`` block, or a decorator.

    ``rate`` is ``"<count>/[n]<unit>"`` (``"10/s"``, ``"100/m"``, ``"1000/h"``, ``"5/2s"``;
    units s, m, h, d) or a list of them, all applied to each call. ``burst`` is how many calls
    of cost 1 may go at once from idle (default: each limit's count; an int applies to every
    limit). ``cost`` is what one entry or call counts as (weighted calls; at most ``burst``).

    ``nowait=True`` raises :class:`CachifyRateLimitedError` (with ``retry_after_s``) when the
    call is not admitted now; otherwise it waits, sleeping until the time the backend reports,
    for at most ``timeout`` seconds (``None``: as long as it takes) before raising the same.

    As a decorator the key is a template over the function's arguments
    (``"tenant-{tenant_id}"``), validated when it is applied; the function gets
    ``retry_after(*args, **kwargs)`` and ``remaining(*args, **kwargs)``, sync or async like it.

    Round trips on Redis: 1 per check (any number of limits), plus 1 per retry while waiting;
    ``retry_after()`` / ``remaining()`` 1 each, counting nothing. Leaving a block costs nothing.
    """

    __slots__ = ("_key", "_limiter", "_provider", "_wait_s")

    def __init__(
        self,
        key: str,
        rate: str | Sequence[str],
        *,
        burst: int | None = None,
        cost: int = 1,
        nowait: bool = False,
        timeout: float | None = None,
        _provider: Callable[[], Cachify] = get_cachify,
    ) -> None:
        if not isinstance(key, str):
            raise TypeError(f"rate_limit key must be a str, got {type(key).__name__}")
        where = f"rate_limit {key!r}"
        self._limiter = _Limiter(where, rate, burst, cost, key)
        wait_s = _check_timeout(where, timeout)
        if not isinstance(nowait, bool):
            raise ValueError(f"{where}: nowait must be a bool, got {nowait!r}")
        if nowait and wait_s is not None:
            raise ValueError(
                f"{where}: nowait=True never waits, so timeout={timeout!r} would be ignored; pass one of them"
            )
        self._wait_s = 0.0 if nowait else wait_s
        self._key = key
        self._provider = _provider

    @property
    def rates(self) -> tuple[Rate, ...]:
        return self._limiter.rates

    def _full_key(self, c: Cachify) -> str:
        return f"{c.prefix}{self._key}-{_POSTFIX}"

    # -- blocking --------------------------------------------------------------------------
    def acquire(self) -> None:
        """Count one call of ``cost`` now, waiting (or raising) as configured."""
        c = self._provider()
        check = self._limiter.admit(c, self._full_key(c), self._wait_s)
        if not check.allowed:
            raise self._limiter.limited(self._key, check)

    def __enter__(self: _Rl) -> _Rl:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def retry_after(self) -> float:
        """Seconds until a call of ``cost`` would be admitted (0.0: now); counts nothing."""
        c = self._provider()
        return _seconds(
            c.sync_backend.rate_acquire(self._full_key(c), self._limiter.limits, self._limiter.cost, False)
        )

    def remaining(self) -> int:
        """Calls of cost 1 every limit would admit right now; counts nothing."""
        c = self._provider()
        return c.sync_backend.rate_acquire(self._full_key(c), self._limiter.limits, 1, False).remaining

    # -- asyncio ---------------------------------------------------------------------------
    async def aacquire(self) -> None:
        c = self._provider()
        check = await self._limiter.aadmit(c, self._full_key(c), self._wait_s)
        if not check.allowed:
            raise self._limiter.limited(self._key, check)

    async def __aenter__(self: _Rl) -> _Rl:
        await self.aacquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def aretry_after(self) -> float:
        c = self._provider()
        limiter = self._limiter
        return _seconds(
            await c.async_backend.rate_acquire(self._full_key(c), limiter.limits, limiter.cost, False)
        )

    async def aremaining(self) -> int:
        c = self._provider()
        return (
            await c.async_backend.rate_acquire(self._full_key(c), self._limiter.limits, 1, False)
        ).remaining

    # -- decorator -------------------------------------------------------------------------
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncRateWrappedF[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncRateWrappedF[P, R]: ...

    def __call__(self, func: Callable[P, Any], /) -> Any:
        """Check ``key`` (a template over ``func``'s arguments) before each call of ``func``."""
        limiter = self._limiter

        def refuse(
            c: Cachify, key: str, check: RateCheck, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            raise limiter.limited(key, check)

        return _wrap(self._key, func, self._provider, limiter, self._wait_s, refuse)


def rate_limited(
    key: str,
    rate: str | Sequence[str],
    on_limited: Callable[..., Any] | None = None,
    raise_on_limited: bool = False,
    *,
    burst: int | None = None,
    cost: int = 1,
    timeout: float | UnsetType | None = UNSET,
) -> RateLimitedDecorator:
    """Rate-limit each call of the decorated function per ``key`` (a template over its arguments).

    A call the limit does not admit raises :class:`CachifyRateLimitedError` if
    ``raise_on_limited``, else returns ``on_limited(*args, **kwargs)`` (awaited if it returns an
    awaitable); with neither, it waits until admitted. ``timeout`` is how long a call may wait
    first (default: not at all with ``on_limited``/``raise_on_limited``, else without bound;
    past it, with neither set, it raises). ``rate``, ``burst`` and ``cost`` as in
    :class:`rate_limit`; the function gets ``retry_after(...)`` and ``remaining(...)``.
    """
    return make_rate_limited(get_cachify, key, rate, on_limited, raise_on_limited, burst, cost, timeout)


def make_rate_limited(
    provider: Callable[[], Cachify],
    key: str,
    rate: str | Sequence[str],
    on_limited: Callable[..., Any] | None,
    raise_on_limited: bool,
    burst: int | None,
    cost: int,
    timeout: float | UnsetType | None,
) -> RateLimitedDecorator:
    if not isinstance(key, str):
        raise TypeError(f"rate_limited key must be a str, got {type(key).__name__}")
    where = f"rate_limited {key!r}"
    limiter = _Limiter(where, rate, burst, cost, key)
    if on_limited is not None and not callable(on_limited):
        raise TypeError(f"{where}: on_limited must be callable, got {type(on_limited).__name__}")
    diverted = raise_on_limited or on_limited is not None
    if isinstance(timeout, UnsetType):
        wait_s: float | None = 0.0 if diverted else None
    else:
        wait_s = _check_timeout(where, timeout)

    def when_limited(
        c: Cachify, display_key: str, check: RateCheck, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        error = limiter.limited(display_key, check)
        if raise_on_limited or on_limited is None:
            raise error
        return on_limited(*args, **kwargs)

    def decorator(func: Callable[..., Any]) -> Any:
        return _wrap(key, func, provider, limiter, wait_s, when_limited)

    return decorator
