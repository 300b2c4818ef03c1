"""``@invalidates``: a mutation evicts the cached reads it makes stale, before it runs.

Evicting *before* the mutation means a mutation that fails half-way still leaves no stale
entry behind (the next read recomputes). A read racing the mutation may re-cache the old
value; pair it with short TTLs, or call ``reset`` again after the write where that matters.

::

    @cached("user-{user_id}")
    def get_user(user_id): ...

    @invalidates(get_user)                       # same arguments: get_user(user_id)
    def rename_user(user_id, name): ...

    @invalidates(get_user, key_fn=lambda order: {"user_id": order.user_id})
    def place_order(order): ...

    @invalidates(get_user, clear_all=True)       # every entry of get_user
    def import_users(rows): ...

``key_fn(*args, **kwargs)`` returns the cached function's arguments: a dict (keyword
arguments), a tuple (positional arguments) or a single value (the one positional argument).
Works from sync and async mutations alike, whatever the cached functions' own kinds.
Round trips: one per target (DEL, or HINCRBY for ``clear_all``) and per cached layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from .cached import CachedFunction
from .keys import func_name
from .wrapping import attach, is_coroutine_function

__all__ = ["invalidates"]

P = ParamSpec("P")
R = TypeVar("R")


def _target(func: Callable[..., Any]) -> CachedFunction:
    cf = getattr(func, "__cachify__", None)
    if not isinstance(cf, CachedFunction):
        raise TypeError(f"@invalidates needs functions decorated with @cached; {func_name(func)} is not")
    return cf


def _cached_args(
    key_fn: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if key_fn is None:
        return args, kwargs
    mapped = key_fn(*args, **kwargs)
    if isinstance(mapped, dict):
        return (), mapped
    if isinstance(mapped, tuple):
        return mapped, {}
    return (mapped,), {}


def invalidates(
    *targets: Callable[..., Any], key_fn: Callable[..., Any] | None = None, clear_all: bool = False
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Evict ``targets``' entries for the decorated function's arguments before it runs."""
    if not targets:
        raise TypeError("@invalidates needs at least one @cached function")
    if key_fn is not None and clear_all:
        raise TypeError("@invalidates: key_fn and clear_all=True exclude each other")
    if key_fn is not None and not callable(key_fn):
        raise TypeError(f"@invalidates: key_fn must be callable, got {key_fn!r}")
    caches = [_target(t) for t in targets]

    def decorator(func: Callable[P, R]) -> Callable[P, R]:
        if is_coroutine_function(func):

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if clear_all:
                    for cf in caches:
                        await cf.aclear()
                else:
                    cargs, ckwargs = _cached_args(key_fn, args, kwargs)
                    for cf in caches:
                        await cf.areset(*cargs, **ckwargs)
                return await func(*args, **kwargs)  # type: ignore[misc]

            return attach(async_wrapper, func)  # type: ignore[no-any-return]

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            if clear_all:
                for cf in caches:
                    cf.clear()
            else:
                cargs, ckwargs = _cached_args(key_fn, args, kwargs)
                for cf in caches:
                    cf.reset(*cargs, **ckwargs)
            return func(*args, **kwargs)

        return attach(sync_wrapper, func)  # type: ignore[no-any-return]

    return decorator
