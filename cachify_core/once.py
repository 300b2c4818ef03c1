"""``@once``: run a function at most once at a time per key; overlapping calls skip or raise.

Built on the lock policy in :mod:`lock` (owner tokens, compare-and-delete release), with
``nowait`` acquisition and the instance's ``default_lock_expiration`` as the hold's lifetime.
Unlike py-cachify, a ``CachifyLockError`` raised *inside* the function propagates: only the
hold's own conflict is turned into ``return_on_locked``.

Round trips on Redis: 1 to take the hold, 1 to release it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from .errors import CachifyLockError
from .instance import Cachify, get_cachify
from .keys import KeyTemplate
from .lock import HeldLockFunctions, guard, locked_message
from .wrapping import AsyncLockWrappedF, SyncLockWrappedF

__all__ = ["OnceDecorator", "make_once", "once"]

logger = logging.getLogger("cachify")

P = ParamSpec("P")
R = TypeVar("R")


class OnceDecorator(Protocol):
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncLockWrappedF[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncLockWrappedF[P, R]: ...


def once(
    key: str, raise_on_locked: bool = False, return_on_locked: Any = None, *, auto_renew: bool = False
) -> OnceDecorator:
    """Let one call per ``key`` run at a time; the others return ``return_on_locked`` (default
    ``None``) or, with ``raise_on_locked=True``, raise :class:`CachifyLockError`.

    The wrapped function gets ``is_locked(*args, **kwargs)``, ``release(*args, **kwargs)``
    (releases a hold a running call in this process owns) and ``force_release(...)``, each
    sync or async like the function. ``auto_renew=True`` renews the hold while the call runs,
    so ``default_lock_expiration`` only bounds how long a crashed call blocks the key.
    """
    return make_once(get_cachify, key, raise_on_locked, return_on_locked, auto_renew)


def make_once(
    provider: Callable[[], Cachify],
    key: str,
    raise_on_locked: bool,
    return_on_locked: Any,
    auto_renew: bool = False,
) -> OnceDecorator:
    def on_locked(c: Cachify, full_key: str) -> Any:
        message = locked_message(full_key[len(c.prefix) :])
        logger.debug(message)
        if raise_on_locked:
            raise CachifyLockError(message)
        return return_on_locked

    def ttl_ms(c: Cachify) -> int | None:
        return c.default_lock_expiration_ms

    def decorator(func: Callable[..., Any]) -> Any:
        helpers = HeldLockFunctions(provider, KeyTemplate(key, func, "once"))
        return guard(func, helpers, ttl_ms, lambda _c: None, on_locked, auto_renew)

    return decorator
