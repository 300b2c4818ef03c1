"""Distributed locks: ``lock`` (context manager and decorator) and the acquire/release policy
that ``once`` shares.

Owner-checked: every acquisition stores a fresh token (see :mod:`tokens`) and a release
deletes the lock only if that token still holds it. An explicit ``release()`` of a lock you
do not hold raises :class:`CachifyLockNotOwnedError` and deletes nothing; the implicit
release at the end of a ``with`` block or decorated call logs a warning instead, because the
work is done and raising there would turn a completed call into a failure.
``force_release()`` is the operator's tool that deletes whoever holds it.

Leases: ``extend(seconds)`` renews the caller's hold, ``owned()`` checks it, and
``auto_renew=True`` renews it every third of its TTL while held (see :mod:`leases`).

Round trips on Redis: acquire 1 (plus 1 per wake-up while waiting), release 1, ``extend`` 1,
``owned``/``is_locked`` 1, ``force_release`` 1; a renewal costs 1 every TTL/3.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from . import leases
from .errors import CachifyBackendError, CachifyLockError, CachifyLockNotOwnedError
from .instance import Cachify, get_cachify, seconds_to_ms
from .keys import KeyTemplate
from .metrics import events
from .protocols import UNSET, UnsetType
from .steps import Steps, acquire_steps, give_back_on_failure, run_async, run_blocking
from .tokens import new_token
from .waiting import WaitPlan
from .wrapping import (
    AsyncLockWrappedF,
    HeldTokens,
    HolderStacks,
    SyncLockWrappedF,
    attach,
    is_coroutine_function,
)

__all__ = ["Held", "lock"]

logger = logging.getLogger("cachify")

P = ParamSpec("P")
R = TypeVar("R")
_L = TypeVar("_L", bound="lock")


#: One live acquisition: (instance, full key, owner token, renewal or None). A plain tuple,
#: because building one is free on the hot path where a NamedTuple costs a call.
Held = tuple[Cachify, str, str, "leases.Lease | None"]


def locked_message(display_key: str) -> str:
    return f"{display_key} is already locked!"


def _take_steps(key: str, token: str, ttl_ms: int | None, plan: WaitPlan) -> Steps[bool]:
    return acquire_steps(lambda waiting: lambda b: b.lock_acquire(key, token, ttl_ms, waiting), key, plan)


def take(
    c: Cachify, key: str, token: str, ttl_ms: int | None, plan: WaitPlan | None, label: str = ""
) -> bool:
    """Acquire ``key`` for ``token``: one try, or wait per ``plan`` (1 round trip per try).
    ``label``: the key as declared, for the wait-time metric."""
    backend = c.sync_backend
    if plan is None:
        return backend.lock_acquire(key, token, ttl_ms, False)
    started = events.now()
    got = run_blocking(_take_steps(key, token, ttl_ms, plan), backend)
    if events.sink is not None:
        events.sink.waited("lock", label, "", events.now() - started)
    return got


async def atake(
    c: Cachify, key: str, token: str, ttl_ms: int | None, plan: WaitPlan | None, label: str = ""
) -> bool:
    backend = c.async_backend
    try:
        if plan is None:
            return await backend.lock_acquire(key, token, ttl_ms, False)
        started = events.now()
        got = await run_async(_take_steps(key, token, ttl_ms, plan), backend)
        if events.sink is not None:
            events.sink.waited("lock", label, "", events.now() - started)
        return got
    except CachifyBackendError:
        raise  # the server is unreachable: a give-back would only wait out another timeout
    except BaseException:
        # Cancelled after the server may have granted it: nobody would ever release this token
        # otherwise. Compare-and-delete makes this safe whether it was granted or not.
        await give_back_on_failure(backend.lock_release(key, token))
        raise


def _warn_lost(key: str) -> None:
    logger.warning(
        "cachify: lock %s had expired or changed hands before its holder released it; "
        "nothing was deleted (raise its expiration, or use auto_renew=True)",
        key,
    )


def _not_owned(display_key: str) -> CachifyLockNotOwnedError:
    return CachifyLockNotOwnedError(
        f"{display_key} is not held by this caller (it expired, was never acquired here, or belongs to "
        "someone else); nothing was released. Use force_release() to break another holder's lock."
    )


def release_quietly(
    c: Cachify, key: str, token: str, lease: leases.Lease | None = None, kind: str = "lock", label: str = ""
) -> None:
    if lease is not None:
        lease.stop()
    ok = c.sync_backend.lock_release(key, token)
    if events.sink is not None:
        events.sink.released(kind, label, "", token, ok)
    if not ok:
        _warn_lost(key)


async def arelease_quietly(
    c: Cachify, key: str, token: str, lease: leases.Lease | None = None, kind: str = "lock", label: str = ""
) -> None:
    leases.end(lease)
    ok = await c.async_backend.lock_release(key, token)
    if events.sink is not None:
        events.sink.released(kind, label, "", token, ok)
    if not ok:
        _warn_lost(key)


class HeldLockFunctions:
    """``is_locked`` / ``release`` / ``force_release`` attached to a ``@lock`` or ``@once`` function."""

    def __init__(self, provider: Callable[[], Cachify], template: KeyTemplate) -> None:
        self.provider = provider
        self.template = template
        self.held = HeldTokens()

    def key(self, c: Cachify, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return c.prefix + self.template.format(args, kwargs)

    def sync_methods(self) -> dict[str, Callable[..., Any]]:
        def is_locked(*args: Any, **kwargs: Any) -> bool:
            c = self.provider()
            return c.sync_backend.lock_holder(self.key(c, args, kwargs)) is not None

        def release(*args: Any, **kwargs: Any) -> None:
            c = self.provider()
            key = self.key(c, args, kwargs)
            taken = self.held.take_latest(key)
            if taken is None:
                raise _not_owned(key)
            leases.end(taken[1])
            ok = c.sync_backend.lock_release(key, taken[0])
            if events.sink is not None:
                events.sink.released(self.template.postfix, self.template.template, "", taken[0], ok)
            if not ok:
                raise _not_owned(key)

        def force_release(*args: Any, **kwargs: Any) -> bool:
            c = self.provider()
            return c.sync_backend.lock_force_release(self.key(c, args, kwargs))

        return {"is_locked": is_locked, "release": release, "force_release": force_release}

    def async_methods(self) -> dict[str, Callable[..., Any]]:
        async def is_locked(*args: Any, **kwargs: Any) -> bool:
            c = self.provider()
            return await c.async_backend.lock_holder(self.key(c, args, kwargs)) is not None

        async def release(*args: Any, **kwargs: Any) -> None:
            c = self.provider()
            key = self.key(c, args, kwargs)
            taken = self.held.take_latest(key)
            if taken is None:
                raise _not_owned(key)
            leases.end(taken[1])
            ok = await c.async_backend.lock_release(key, taken[0])
            if events.sink is not None:
                events.sink.released(self.template.postfix, self.template.template, "", taken[0], ok)
            if not ok:
                raise _not_owned(key)

        async def force_release(*args: Any, **kwargs: Any) -> bool:
            c = self.provider()
            return await c.async_backend.lock_force_release(self.key(c, args, kwargs))

        return {"is_locked": is_locked, "release": release, "force_release": force_release}


def _extension_ms(key: str, seconds: float) -> int:
    ttl_ms = seconds_to_ms(seconds, f"lock {key!r} extend")
    if ttl_ms is None:  # "never expires" is not an extension a lease can be given
        raise ValueError(f"lock {key!r}: extend needs a finite number of seconds, got {seconds!r}")
    return ttl_ms


def _check_timeout(what: str, timeout: float | None) -> None:
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
    ):
        raise ValueError(f"{what}: timeout must be a number of seconds >= 0 or None, got {timeout!r}")


class lock(HolderStacks[Held]):
    """A distributed lock on ``key``: ``with``/``async with`` it, or decorate a function with it.

    ``nowait=True`` (default) raises :class:`CachifyLockError` at once if the lock is held;
    ``nowait=False`` waits up to ``timeout`` seconds (``None``: for ever), woken by the
    holder's release within milliseconds, re-checking at least every ``lock_poll_interval``.
    ``exp`` is the lock's lifetime in seconds (omitted: the instance's
    ``default_lock_expiration``; ``None``: never expires). ``auto_renew=True`` keeps renewing
    it while held, so ``exp`` only bounds how long a crashed holder blocks others.

    One object may be entered by several threads or tasks, and nested: each entry is its own
    acquisition with its own token, released by the matching exit.
    """

    __slots__ = (
        "_auto_renew",
        "_bound",
        "_exp_ms",
        "_key",
        "_nowait",
        "_provider",
        "_timeout",
    )

    def __init__(
        self,
        key: str,
        nowait: bool = True,
        timeout: float | None = None,
        exp: float | UnsetType | None = UNSET,
        *,
        auto_renew: bool = False,
        _provider: Callable[[], Cachify] = get_cachify,
    ) -> None:
        if not isinstance(key, str):
            raise TypeError(f"lock key must be a str, got {type(key).__name__}")
        if timeout is not None:
            _check_timeout(f"lock {key!r}", timeout)
        self._exp_ms = exp if exp is UNSET else seconds_to_ms(exp, f"lock {key!r} exp")  # type: ignore[arg-type]
        self._key = key
        self._nowait = nowait
        self._timeout = timeout
        self._auto_renew = auto_renew
        self._provider = _provider
        self._stacks = {}  # HolderStacks: this object's live acquisitions per thread/task
        self._bound: tuple[Cachify, str, int | None] | None = None

    # -- shared, no I/O ---------------------------------------------------------------------
    def _ttl_ms(self, c: Cachify) -> int | None:
        return c.default_lock_expiration_ms if isinstance(self._exp_ms, UnsetType) else self._exp_ms

    def _plan(self, c: Cachify) -> WaitPlan | None:
        return None if self._nowait else WaitPlan(self._timeout, c.lock_poll_interval)

    def _full_key(self, c: Cachify) -> str:
        return f"{c.prefix}{self._key}-lock"

    def _refused(self) -> CachifyLockError:
        if events.sink is not None:
            events.sink.count("denied", "lock", self._key, "")
        logger.debug(locked_message(self._key))
        return CachifyLockError(locked_message(self._key))

    def _current(self, asynchronous: bool) -> Held:
        held = self.peek(asynchronous)
        if held is None:
            raise _not_owned(self._key)
        return held

    # -- blocking --------------------------------------------------------------------------
    def _bind(self, c: Cachify) -> tuple[Cachify, str, int | None]:
        """(instance, full key, ttl) for ``c``, remembered: the hot path skips rebuilding them."""
        bound = self._bound
        if bound is None or bound[0] is not c:
            bound = self._bound = (c, f"{c.prefix}{self._key}-lock", self._ttl_ms(c))
        return bound

    def __enter__(self: _L) -> _L:
        c = self._provider()
        bound = self._bound
        c, key, ttl_ms = bound if bound is not None and bound[0] is c else self._bind(c)
        token = new_token()
        if self._nowait:
            if not (c._sync or c.sync_backend).lock_acquire(key, token, ttl_ms, False):
                raise self._refused()
        elif not take(c, key, token, ttl_ms, self._plan(c), self._key):
            raise self._refused()
        lease = leases.begin(c, "lock", key, token, ttl_ms, True, False) if self._auto_renew else None
        self.push(False, (c, key, token, lease))
        if events.sink is not None:
            events.sink.acquired("lock", self._key, "", token)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        held = self.pop(False)
        if held is not None:
            c, key, token, lease = held
            if lease is not None:
                lease.stop()
            ok = (c._sync or c.sync_backend).lock_release(key, token)
            if events.sink is not None:
                events.sink.released("lock", self._key, "", token, ok)
            if not ok:
                _warn_lost(key)

    def release(self) -> None:
        """Release this caller's hold; :class:`CachifyLockNotOwnedError` if it holds none."""
        held = self.pop(False)
        if held is None:
            raise _not_owned(self._key)
        leases.end(held[3])
        ok = held[0].sync_backend.lock_release(held[1], held[2])
        if events.sink is not None:
            events.sink.released("lock", self._key, "", held[2], ok)
        if not ok:
            raise _not_owned(self._key)

    def extend(self, seconds: float) -> None:
        """Give this caller's hold ``seconds`` more to live (from now); raises if it is not held."""
        held = self._current(False)
        ttl_ms = _extension_ms(self._key, seconds)
        if not held[0].sync_backend.lock_extend(held[1], held[2], ttl_ms):
            raise _not_owned(self._key)
        if held[3] is not None:
            held[3].ttl_ms = ttl_ms

    def owned(self) -> bool:
        """Whether this caller (thread) holds the lock right now (1 round trip)."""
        held = self.peek(False)
        return held is not None and held[0].sync_backend.lock_holder(held[1]) == held[2]

    def is_locked(self) -> bool:
        """Whether anyone holds the lock (1 round trip)."""
        c = self._provider()
        return c.sync_backend.lock_holder(self._full_key(c)) is not None

    def force_release(self) -> bool:
        """Delete the lock whoever holds it; True if a live lock was deleted."""
        c = self._provider()
        return c.sync_backend.lock_force_release(self._full_key(c))

    # -- asyncio ---------------------------------------------------------------------------
    async def __aenter__(self: _L) -> _L:
        c = self._provider()
        key, token, ttl_ms = self._full_key(c), new_token(), self._ttl_ms(c)
        if not await atake(c, key, token, ttl_ms, self._plan(c), self._key):
            raise self._refused()
        lease = leases.begin(c, "lock", key, token, ttl_ms, self._auto_renew, True)
        self.push(True, (c, key, token, lease))
        if events.sink is not None:
            events.sink.acquired("lock", self._key, "", token)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        held = self.pop(True)
        if held is not None:
            await arelease_quietly(held[0], held[1], held[2], held[3], "lock", self._key)

    async def arelease(self) -> None:
        held = self.pop(True)
        if held is None:
            raise _not_owned(self._key)
        leases.end(held[3])
        ok = await held[0].async_backend.lock_release(held[1], held[2])
        if events.sink is not None:
            events.sink.released("lock", self._key, "", held[2], ok)
        if not ok:
            raise _not_owned(self._key)

    async def aextend(self, seconds: float) -> None:
        held = self._current(True)
        ttl_ms = _extension_ms(self._key, seconds)
        if not await held[0].async_backend.lock_extend(held[1], held[2], ttl_ms):
            raise _not_owned(self._key)
        if held[3] is not None:
            held[3].ttl_ms = ttl_ms

    async def aowned(self) -> bool:
        held = self.peek(True)
        return held is not None and await held[0].async_backend.lock_holder(held[1]) == held[2]

    async def is_alocked(self) -> bool:
        c = self._provider()
        return await c.async_backend.lock_holder(self._full_key(c)) is not None

    async def aforce_release(self) -> bool:
        c = self._provider()
        return await c.async_backend.lock_force_release(self._full_key(c))

    # -- decorator -------------------------------------------------------------------------
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncLockWrappedF[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncLockWrappedF[P, R]: ...

    def __call__(self, func: Callable[P, Any], /) -> Any:
        """Hold ``key`` (a template over ``func``'s arguments) for each call of ``func``."""

        def conflict(c: Cachify, key: str) -> Any:
            raise CachifyLockError(locked_message(key[len(c.prefix) :]))

        template = KeyTemplate(self._key, func, "lock")
        helpers = HeldLockFunctions(self._provider, template)
        return guard(func, helpers, self._ttl_ms, self._plan, conflict, self._auto_renew)


def guard(
    func: Callable[..., Any],
    helpers: HeldLockFunctions,
    ttl_ms: Callable[[Cachify], int | None],
    plan: Callable[[Cachify], WaitPlan | None],
    conflict: Callable[[Cachify, str], Any],
    auto_renew: bool,
) -> Any:
    """Wrap ``func`` so each call holds the lock its arguments name (``@lock`` and ``@once``).

    ``conflict(instance, full_key)`` is what a call that cannot take the lock returns (or raises).
    """
    held, provider = helpers.held, helpers.provider
    kind, label = helpers.template.postfix, helpers.template.template  # metrics: "lock"/"once", template

    if is_coroutine_function(func):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            c = provider()
            key, token, ttl = helpers.key(c, args, kwargs), new_token(), ttl_ms(c)
            if not await atake(c, key, token, ttl, plan(c), label):
                if events.sink is not None:
                    events.sink.count("denied", kind, label, "")
                return conflict(c, key)
            lease = leases.begin(c, "lock", key, token, ttl, auto_renew, True)
            held.add(key, token, lease)
            if events.sink is not None:
                events.sink.acquired(kind, label, "", token)
            try:
                return await func(*args, **kwargs)
            finally:
                if held.discard(key, token):
                    await arelease_quietly(c, key, token, lease, kind, label)
                else:
                    leases.end(lease)

        return attach(async_wrapper, func, **helpers.async_methods())

    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        c = provider()
        key, token, ttl = helpers.key(c, args, kwargs), new_token(), ttl_ms(c)
        if not take(c, key, token, ttl, plan(c), label):
            if events.sink is not None:
                events.sink.count("denied", kind, label, "")
            return conflict(c, key)
        lease = leases.begin(c, "lock", key, token, ttl, auto_renew, False)
        held.add(key, token, lease)
        if events.sink is not None:
            events.sink.acquired(kind, label, "", token)
        try:
            return func(*args, **kwargs)
        finally:
            if held.discard(key, token):
                release_quietly(c, key, token, lease, kind, label)
            else:
                leases.end(lease)

    return attach(sync_wrapper, func, **helpers.sync_methods())
