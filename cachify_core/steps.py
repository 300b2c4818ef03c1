"""Logic written once for blocking and asyncio callers: generators of backend steps.

A *step* is ``lambda backend: backend.<primitive>(...)`` (or any call that does I/O, such as
running the user's function). Policy code yields steps and receives their results; the
blocking driver calls each step with the sync backend, the asyncio driver awaits it with the
async backend. So everything that does no I/O — keys, TTLs, branching, error handling —
exists in one copy, and the two drivers below are the only twins. A :class:`Sleep` step
waits without calling the backend (``time.sleep`` / ``asyncio.sleep``). A :class:`Batch` step
makes several primitive calls that do not depend on each other's results at once: the
backend's ``batch`` sends them in one round trip where it can (a single Redis server), one
after the other elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, Protocol, TypeVar

from .backends.base import Call, RateLimit, RoomSettings
from .waiting import WaitPlan

__all__ = [
    "Batch",
    "Call",
    "Primitives",
    "Sleep",
    "Step",
    "Steps",
    "acquire_steps",
    "give_back_on_failure",
    "run_async",
    "run_blocking",
]

T = TypeVar("T")


class Primitives(Protocol):
    """What a step may call: the backend primitives of ``backends/base.py`` with their exact
    parameters. Results are ``Any`` because the blocking twin returns values and the asyncio
    twin awaitables; the names and arguments are checked, so ``b.lock_aquire(...)`` or a
    missing argument inside a step lambda fails ``mypy``. Both ``SyncBackend`` and
    ``AsyncBackend`` implementations satisfy it."""

    def cache_get(self, ns: str, key: str) -> Any: ...

    def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> Any: ...

    def cache_delete(self, ns: str, key: str) -> Any: ...

    def cache_clear(self, ns: str) -> Any: ...

    def cache_clear_fills(self, ns: str) -> Any: ...

    def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> Any: ...

    def lock_release(self, key: str, token: str) -> Any: ...

    def lock_extend(self, key: str, token: str, ttl_ms: int | None) -> Any: ...

    def lock_holder(self, key: str) -> Any: ...

    def lock_force_release(self, key: str) -> Any: ...

    def pool_acquire(
        self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float
    ) -> Any: ...

    def pool_release(self, key: str, token: str) -> Any: ...

    def pool_extend(self, key: str, token: str, ttl_ms: int) -> Any: ...

    def pool_size(self, key: str) -> Any: ...

    def wait(self, key: str, timeout_s: float) -> Any: ...

    def rate_acquire(self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool) -> Any: ...

    def rate_acquire_bounds(
        self, bounds: Sequence[tuple[str, Sequence[RateLimit]]], cost: int, consume: bool
    ) -> Any: ...

    def room_acquire(
        self,
        key: str,
        token: str,
        entry_id: str,
        payload: bytes,
        room: RoomSettings,
        reservation: str | None = None,
    ) -> Any: ...

    def room_release(self, key: str, token: str, room: RoomSettings, claimed: str | None = None) -> Any: ...

    def room_cancel(self, key: str, entry_id: str, room: RoomSettings) -> Any: ...

    def room_park_until(
        self, key: str, entry_id: str, payload: bytes, delay_ms: int, room: RoomSettings, spacing_ms: int = 0
    ) -> Any: ...

    def room_arrive(
        self, key: str, token: str, entry_id: str, payload: bytes, room: RoomSettings, reservation: str
    ) -> Any: ...

    def room_sweep(self, key: str, registry: str, limit: int) -> Any: ...

    def room_stats(self, key: str) -> Any: ...

    def rooms(self, registry: str) -> Any: ...

    def batch(self, calls: Sequence[Call]) -> Any: ...


#: One backend call (or any I/O, such as running the user's function, which ignores the backend).
Step = Callable[[Primitives], Any]
Steps = Generator[Step, Any, T]


class _Recorder:
    """Stands for the backend while a batched step runs: records the call it makes."""

    __slots__ = ("call",)

    def __init__(self) -> None:
        self.call: Call | None = None

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.call = Call(name, args)

        return record


class Batch:
    """Steps whose calls do not depend on one another, made together; the generator receives
    their results as a tuple, in order. Each step must make exactly one primitive call, with
    positional arguments (a step written as for a plain ``yield``: ``lambda b: b.<primitive>(...)``,
    so its name and arguments are type-checked the same way)."""

    __slots__ = ("calls",)

    def __init__(self, *steps: Step) -> None:
        calls = []
        for step in steps:
            recorder = _Recorder()
            step(recorder)  # it records instead of calling
            if recorder.call is None:
                raise TypeError("a batched step must call one backend primitive")
            calls.append(recorder.call)
        self.calls: tuple[Call, ...] = tuple(calls)

    def __call__(self, backend: Primitives) -> Any:
        raise TypeError("a Batch step is run by run_blocking or run_async, not called")


class Sleep:
    """A step that only waits ``delay_s`` seconds; the drivers sleep their own way."""

    __slots__ = ("delay_s",)

    def __init__(self, delay_s: float) -> None:
        self.delay_s = max(delay_s, 0.0)

    def __call__(self, backend: Primitives) -> Any:
        raise TypeError("a Sleep step is run by run_blocking or run_async, not called")


def run_blocking(steps: Steps[T], backend: Primitives) -> T:
    """Drive ``steps`` with blocking calls on ``backend``."""
    try:
        step = next(steps)
        while True:
            try:
                if isinstance(step, Sleep):
                    time.sleep(step.delay_s)
                    result = None
                elif isinstance(step, Batch):
                    result = tuple(backend.batch(step.calls))
                else:
                    result = step(backend)
            except BaseException as exc:
                step = steps.throw(exc)
            else:
                step = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(steps: Steps[T], backend: Primitives) -> T:
    """Drive ``steps`` on the running event loop, awaiting each call on ``backend``."""
    try:
        step = next(steps)
        while True:
            try:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.delay_s)
                    result = None
                elif isinstance(step, Batch):
                    result = tuple(await backend.batch(step.calls))
                else:
                    result = await step(backend)
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
