"""Plumbing shared by every decorator: sync/async detection, held-token books, typed wrappers."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

__all__ = [
    "AsyncLockWrappedF",
    "AsyncPoolWrappedF",
    "AsyncResetWrappedF",
    "HeldTokens",
    "HolderStacks",
    "LockedDecorator",
    "SyncLockWrappedF",
    "SyncPoolWrappedF",
    "SyncResetWrappedF",
    "holder_id",
    "is_coroutine_function",
]

P = ParamSpec("P")
R = TypeVar("R")
_get_ident = threading.get_ident
E = TypeVar("E")


def is_coroutine_function(func: Callable[..., Any]) -> bool:
    """True for ``async def`` functions, partials of them and objects with an async ``__call__``."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    return (
        callable(func) and not inspect.isfunction(func) and inspect.iscoroutinefunction(type(func).__call__)
    )


def holder_id(asynchronous: bool) -> object:
    """Who is acquiring: the running task (asyncio) or the thread (blocking)."""
    if asynchronous:
        task = asyncio.current_task()
        if task is not None:
            return task
    return _get_ident()


class HolderStacks(Generic[E]):
    """Per thread/task stacks of an object's live acquisitions (``with lk:`` nests, and one
    object may be entered from many threads or tasks at once)."""

    __slots__ = ("_stacks",)

    def __init__(self) -> None:
        self._stacks: dict[object, list[E]] = {}

    # holder_id() inlined below: these run on every lock and pool entry and exit.
    def push(self, asynchronous: bool, entry: E) -> None:
        holder = (asyncio.current_task() or _get_ident()) if asynchronous else _get_ident()
        stack = self._stacks.get(holder)
        if stack is None:
            self._stacks[holder] = [entry]
        else:
            stack.append(entry)

    def peek(self, asynchronous: bool) -> E | None:
        stack = self._stacks.get(holder_id(asynchronous))
        return stack[-1] if stack else None

    def pop(self, asynchronous: bool) -> E | None:
        holder = (asyncio.current_task() or _get_ident()) if asynchronous else _get_ident()
        stack = self._stacks.get(holder)
        if not stack:
            return None
        entry = stack.pop()
        if not stack:
            del self._stacks[holder]
        return entry


_books: weakref.WeakSet[HeldTokens] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for book in list(_books):
        book._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class HeldTokens:
    """This process's live acquisitions of one decorator, by full key: (token, renewal).

    Lets ``fn.release(*args)`` release a hold that a running call of ``fn`` owns, with its
    token, and stop its renewal, instead of deleting whatever is there.
    """

    __slots__ = ("__weakref__", "_by_key", "_mutex")

    def __init__(self) -> None:
        self._by_key: dict[str, list[tuple[str, Any]]] = {}
        self._mutex = threading.Lock()
        _books.add(self)

    def _reset_after_fork(self) -> None:
        # A forked child runs none of its parent's calls, and may inherit the mutex held.
        self._by_key = {}
        self._mutex = threading.Lock()

    def add(self, key: str, token: str, lease: Any = None) -> None:
        with self._mutex:
            self._by_key.setdefault(key, []).append((token, lease))

    def discard(self, key: str, token: str) -> bool:
        """Forget ``token``; False if it was already gone (released explicitly)."""
        with self._mutex:
            entries = self._by_key.get(key)
            if not entries:
                return False
            for i, (held_token, _lease) in enumerate(entries):
                if held_token == token:
                    del entries[i]
                    if not entries:
                        del self._by_key[key]
                    return True
            return False

    def take_latest(self, key: str) -> tuple[str, Any] | None:
        """The newest (token, renewal) held under ``key``, forgotten; ``None`` if there is none."""
        with self._mutex:
            entries = self._by_key.get(key)
            if not entries:
                return None
            entry = entries.pop()
            if not entries:
                del self._by_key[key]
            return entry


# -- typed wrappers (what the decorators return) ------------------------------------------------
class SyncResetWrappedF(Protocol[P, R]):
    __wrapped__: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def reset(self, *args: P.args, **kwargs: P.kwargs) -> None: ...

    def clear_cache(self) -> None: ...

    def clear_being_calculated(self) -> None: ...

    def precache_value(self, *args: Any, value_to_cache: R, **kwargs: Any) -> None: ...


class AsyncResetWrappedF(Protocol[P, R]):
    __wrapped__: Callable[P, Awaitable[R]]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...

    async def reset(self, *args: P.args, **kwargs: P.kwargs) -> None: ...

    async def clear_cache(self) -> None: ...

    async def clear_being_calculated(self) -> None: ...

    async def precache_value(self, *args: Any, value_to_cache: R, **kwargs: Any) -> None: ...


class SyncLockWrappedF(Protocol[P, R]):
    __wrapped__: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def is_locked(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...

    def release(self, *args: P.args, **kwargs: P.kwargs) -> None: ...

    def force_release(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...


class AsyncLockWrappedF(Protocol[P, R]):
    __wrapped__: Callable[P, Awaitable[R]]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...

    async def is_locked(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...

    async def release(self, *args: P.args, **kwargs: P.kwargs) -> None: ...

    async def force_release(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...


class SyncPoolWrappedF(Protocol[P, R]):
    __wrapped__: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def size(self, *args: P.args, **kwargs: P.kwargs) -> int: ...


class AsyncPoolWrappedF(Protocol[P, R]):
    __wrapped__: Callable[P, Awaitable[R]]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...

    async def size(self, *args: P.args, **kwargs: P.kwargs) -> int: ...


class LockedDecorator(Protocol):
    """What ``once(...)`` returns, and what ``lock(...)`` does when called on a function."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncLockWrappedF[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncLockWrappedF[P, R]: ...

    def __call__(self, func: Callable[P, Any], /) -> Any: ...


def attach(wrapper: Callable[..., Any], func: Callable[..., Any], **methods: Callable[..., Any]) -> Any:
    """``functools.wraps`` plus the feature's helper methods (``reset``, ``release``, ...)."""
    functools.update_wrapper(wrapper, func)
    for name, method in methods.items():
        setattr(wrapper, name, method)
    return wrapper
