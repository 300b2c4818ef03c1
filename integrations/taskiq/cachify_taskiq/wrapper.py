"""The function Taskiq's receiver calls in place of the task's own (``task.original_func``).

A Taskiq middleware cannot skip a run: raising in ``pre_execute`` drops the delivery with no
ack. So admission happens here, inside the receiver's ``run_task``: returning a value makes
it the task's result (a cache hit, a callable ``pool_on_full``), and raising ``NoResultError``
makes Taskiq store nothing and acknowledge (a duplicate, a drop, a requeue).

Every policy call runs on the worker's event loop with the async backend: an async task awaits
it, a sync task (in Taskiq's thread pool) hands it to the loop and waits in its thread. Called
outside a worker run (``my_task(1)`` directly), the wrapper just calls the function.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cachify_core.errors import CachifyPoolFullError
from cachify_core.tasks import Verdict

from . import runs

if TYPE_CHECKING:
    from .declaration import Declaration

__all__ = ["WRAPPED_ATTR", "wrap"]

#: Attribute of a wrapper naming the function it wraps, so a task is never wrapped twice.
WRAPPED_ATTR = "__cachify_taskiq_wraps__"


async def _awaited(value: Any) -> Any:
    """An async callable ``pool_on_full`` returns a coroutine: its result is the task's."""
    return await value if inspect.isawaitable(value) else value


def wrap(func: Callable[..., Any], declaration: Declaration) -> Callable[..., Any]:
    name = declaration.name
    # Without options only a CachifyPoolFullError from the body matters: no admission, and for
    # a sync task no hop to the event loop.
    admits = declaration.policy.options.active
    wrapper: Callable[..., Any]
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            run = runs.enter(name)
            if run is None:
                return await func(*args, **kwargs)
            run.args, run.kwargs = args, kwargs
            if admits:
                admission = await run.admit()
                if admission.verdict is not Verdict.RUN:
                    return await _awaited(run.without_body(admission))
            try:
                return await func(*args, **kwargs)
            except CachifyPoolFullError as exc:
                return await _awaited(run.body_pool_full(exc))

    else:
        wrapper = SyncTaskFunction(func, name, admits)

    setattr(wrapper, WRAPPED_ATTR, func)
    return wrapper


class SyncTaskFunction:
    """A sync task's wrapper. A class, not a closure, so that Taskiq's process pool
    (``--use-process-pool``) can pickle it: in the pool's process no run is found, and the
    function runs without cachify (see the README)."""

    def __init__(self, func: Callable[..., Any], name: str, admits: bool) -> None:
        self._func, self._name, self._admits = func, name, admits
        functools.update_wrapper(self, func)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SyncTaskFunction, (self._func, self._name, self._admits))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        func = self._func
        run = runs.enter(self._name)
        if run is None:
            return func(*args, **kwargs)
        run.args, run.kwargs = args, kwargs
        if self._admits:
            admission = run.on_loop(run.admit())
            if admission.verdict is not Verdict.RUN:
                return _resolved(run, run.without_body(admission))
        try:
            return func(*args, **kwargs)
        except CachifyPoolFullError as exc:
            return _resolved(run, run.body_pool_full(exc))


def _resolved(run: runs.Run, value: Any) -> Any:
    """A sync task's result: an awaitable one (an async ``pool_on_full``) is run on the loop."""
    return run.on_loop(_awaited(value)) if inspect.isawaitable(value) else value
