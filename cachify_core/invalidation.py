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

Without ``key_fn``, each cached function gets the mutation's arguments of the same names
(``rename_user(user_id, name)`` resets ``get_user(user_id=...)``); a cached function needing an
argument the mutation lacks is an error when decorating. ``key_fn(*args, **kwargs)`` returns
the cached function's arguments instead: a dict (keyword arguments), a tuple (positional
arguments) or a single value (the one positional argument).
Works from sync and async mutations alike, whatever the cached functions' own kinds.
Round trips: one per target (DEL, or INCR of the generation for ``clear_all``) and per cached layer.
"""

from __future__ import annotations

import inspect
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


class _ByName:
    """Without ``key_fn``: a target gets the mutation's arguments of the same names."""

    def __init__(self, mutation: Callable[..., Any], targets: list[CachedFunction]) -> None:
        self.signature = inspect.signature(mutation)
        params = self.signature.parameters
        self.var_keyword = next((p.name for p in params.values() if p.kind == p.VAR_KEYWORD), None)
        self.wanted: list[frozenset[str] | None] = []
        for cf in targets:
            tparams = inspect.signature(cf.func).parameters
            if any(p.kind == p.VAR_KEYWORD for p in tparams.values()):
                self.wanted.append(None)  # takes anything: pass every named argument
                continue
            names = frozenset(
                n for n, p in tparams.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            )
            required = {n for n in names if tparams[n].default is tparams[n].empty}
            missing = sorted(required - set(params))
            if missing and self.var_keyword is None:
                raise TypeError(
                    f"@invalidates({func_name(cf.func)}) on {func_name(mutation)}: it has no argument "
                    f"{', '.join(missing)}; pass key_fn= to map its arguments"
                )
            self.wanted.append(names)

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        named = dict(bound.arguments)
        if self.var_keyword is not None:
            named.update(named.pop(self.var_keyword, {}))
        return named

    def for_target(self, index: int, named: dict[str, Any]) -> dict[str, Any]:
        wanted = self.wanted[index]
        return dict(named) if wanted is None else {k: v for k, v in named.items() if k in wanted}


def _cached_args(
    key_fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
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
        by_name = _ByName(func, caches) if key_fn is None and not clear_all else None

        def calls(
            args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> list[tuple[CachedFunction, tuple[Any, ...], dict[str, Any]]]:
            """(target, args, kwargs) of each reset, for one call of the mutation (no I/O)."""
            if by_name is not None:
                named = by_name.arguments(args, kwargs)
                return [(cf, (), by_name.for_target(i, named)) for i, cf in enumerate(caches)]
            assert key_fn is not None
            cargs, ckwargs = _cached_args(key_fn, args, kwargs)
            return [(cf, cargs, ckwargs) for cf in caches]

        if is_coroutine_function(func):

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if clear_all:
                    for cf in caches:
                        await cf.aclear()
                else:
                    for cf, cargs, ckwargs in calls(args, kwargs):
                        await cf.areset(*cargs, **ckwargs)
                return await func(*args, **kwargs)  # type: ignore[misc]

            return attach(async_wrapper, func)  # type: ignore[no-any-return]

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            if clear_all:
                for cf in caches:
                    cf.clear()
            else:
                for cf, cargs, ckwargs in calls(args, kwargs):
                    cf.reset(*cargs, **ckwargs)
            return func(*args, **kwargs)

        return attach(sync_wrapper, func)  # type: ignore[no-any-return]

    return decorator
