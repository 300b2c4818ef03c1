"""Logic written once for blocking and asyncio callers: generators of backend steps.

A *step* is ``lambda backend: backend.<primitive>(...)`` (or any call that does I/O, such as
running the user's function). Policy code yields steps and receives their results; the
blocking driver calls each step with the sync backend, the asyncio driver awaits it with the
async backend. So everything that does no I/O — keys, TTLs, branching, error handling —
exists in one copy, and the two drivers below are the only twins. A :class:`Sleep` step
waits without calling the backend (``time.sleep`` / ``asyncio.sleep``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

from .waiting import WaitPlan

__all__ = [
    "Sleep",
    "Step",
    "Steps",
    "acquire_steps",
    "give_back_on_failure",
    "run_async",
    "run_blocking",
]

T = TypeVar("T")

Step = Callable[[Any], Any]
Steps = Generator[Step, Any, T]


class Sleep:
    """A step that only waits ``delay_s`` seconds; the drivers sleep their own way."""

    __slots__ = ("delay_s",)

    def __init__(self, delay_s: float) -> None:
        self.delay_s = max(delay_s, 0.0)

    def __call__(self, backend: Any) -> Any:
        raise TypeError("a Sleep step is run by run_blocking or run_async, not called")


def run_blocking(steps: Steps[T], backend: Any) -> T:
    """Drive ``steps`` with blocking calls on ``backend``."""
    try:
        step = next(steps)
        while True:
            try:
                if isinstance(step, Sleep):
                    time.sleep(step.delay_s)
                    result = None
                else:
                    result = step(backend)
            except BaseException as exc:
                step = steps.throw(exc)
            else:
                step = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(steps: Steps[T], backend: Any) -> T:
    """Drive ``steps`` on the running event loop, awaiting each call on ``backend``."""
    try:
        step = next(steps)
        while True:
            try:
                result = await (asyncio.sleep(step.delay_s) if isinstance(step, Sleep) else step(backend))
            except BaseException as exc:
                step = steps.throw(exc)
            else:
                step = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def acquire_steps(attempt: Callable[[float], Step], key: str, plan: WaitPlan | None) -> Steps[bool]:
    """The waiting acquire of :mod:`waiting`, as steps: try, register, wait to be woken, retry."""
    if plan is None:
        return bool((yield attempt(False)))
    while True:
        waiting = plan.slice_s() if plan.may_wait() else 0.0
        if (yield attempt(waiting)):
            return True
        if not waiting:
            return False
        yield _wait(key, plan.slice_s())


def _wait(key: str, delay_s: float) -> Step:
    return lambda b: b.wait(key, delay_s)


async def give_back_on_failure(release: Coroutine[Any, Any, Any]) -> None:
    """Run ``release`` while an acquire is failing (typically: cancelled) — shielded from a
    second cancellation, its own errors swallowed so the original one propagates."""
    with contextlib.suppress(Exception):
        await asyncio.shield(release)
