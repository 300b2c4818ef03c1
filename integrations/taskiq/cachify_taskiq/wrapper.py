"""The function Taskiq's receiver calls in place of the task's own (``task.original_func``).

A Taskiq middleware cannot skip a run: raising in ``pre_execute`` drops the delivery with no
ack. So the delivery is admitted here, inside the receiver's ``run_task``: returning a value
makes it the task's result (a cache hit, a callable ``pool_on_full``), and raising
``NoResultError`` makes Taskiq store nothing and acknowledge (a duplicate, a drop, a requeue).

Every store call runs on the worker's event loop with the async backend: an async task awaits
it, a sync task (in Taskiq's thread pool) hands it to the loop and waits in its thread (a
delivery without options does no I/O, so it is driven in the thread). Called outside a worker
run (``my_task(1)`` directly), the wrapper just calls the function.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from cachify_core.errors import CachifyPoolFullError
from cachify_core.tasks import Verdict

from . import context

__all__ = ["WRAPPED_ATTR", "SyncTaskFunction", "wrap"]

#: Attribute of a wrapper naming the function it wraps, so a task is never wrapped twice.
WRAPPED_ATTR = "__cachify_taskiq_wraps__"


def wrap(func: Callable[..., Any], task_name: str) -> Callable[..., Any]:
    wrapper: Callable[..., Any]
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            run = context.enter(task_name)
            if run is None:
                return await func(*args, **kwargs)
            delivery = run.start(args, kwargs)
            decision = await delivery.aadmit() if delivery.active else delivery.admit()
            if decision.verdict is not Verdict.RUN:
                return run.without_body(decision)
            try:
                return await func(*args, **kwargs)
            except CachifyPoolFullError as exc:  # a stacked @pooled / pool(...): like pool_on_full
                after = await delivery.araised(exc)
                if after is None:
                    raise
                return run.without_body(after)

    else:
        wrapper = SyncTaskFunction(func, task_name)

    setattr(wrapper, WRAPPED_ATTR, func)
    return wrapper


class SyncTaskFunction:
    """A sync task's wrapper. A class, not a closure, so that Taskiq's process pool
    (``--use-process-pool``) can pickle it: in the pool's process no run is found, and the
    function runs without cachify (see the README)."""

    def __init__(self, func: Callable[..., Any], task_name: str) -> None:
        self._func, self._name = func, task_name
        functools.update_wrapper(self, func)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SyncTaskFunction, (self._func, self._name))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        run = context.enter(self._name)
        if run is None:
            return self._func(*args, **kwargs)
        delivery = run.start(args, kwargs)
        decision = run.on_loop(delivery.aadmit()) if delivery.active else delivery.admit()
        if decision.verdict is not Verdict.RUN:
            return run.without_body(decision)
        try:
            return self._func(*args, **kwargs)
        except CachifyPoolFullError as exc:
            after = run.on_loop(delivery.araised(exc)) if delivery.active else delivery.raised(exc)
            if after is None:
                raise
            return run.without_body(after)
