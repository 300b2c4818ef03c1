"""How an acquire waits: try, register as a waiter, sleep until woken or the poll bound.

Shared by locks and pools, blocking and asyncio alike; only the two loops below differ, by
``await``. A wake-up comes from the backend's release signal (milliseconds after a release);
``poll_s`` bounds every sleep so expiries (which signal nobody) are noticed too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

__all__ = ["WaitPlan", "acquire_async", "acquire_blocking"]

_now = time.monotonic


class WaitPlan:
    """The waiting budget of one acquire: ``timeout_s=None`` waits for ever."""

    __slots__ = ("_poll_s", "_until")

    def __init__(self, timeout_s: float | None, poll_s: float) -> None:
        self._until = math.inf if timeout_s is None else _now() + timeout_s
        self._poll_s = poll_s

    def may_wait(self) -> bool:
        return _now() < self._until

    # a wait slice of 0 would read as "not waiting": keep it positive while waiting is allowed

    def slice_s(self) -> float:
        """Seconds to sleep before the next attempt."""
        return max(0.001, min(self._poll_s, self._until - _now()))


def acquire_blocking(
    attempt: Callable[[float], bool], wait: Callable[[float], object], plan: WaitPlan | None
) -> bool:
    """Run ``attempt(waiting)`` until it succeeds or the plan runs out (``None``: one try).

    ``waiting`` is how long the caller means to wait before its next try (0: it will not wait),
    so a backend can keep its "someone is waiting" mark alive at least that long.
    """
    if plan is None:
        return attempt(False)
    while True:
        waiting = plan.slice_s() if plan.may_wait() else 0.0
        if attempt(waiting):
            return True
        if not waiting:
            return False
        wait(plan.slice_s())


async def acquire_async(
    attempt: Callable[[float], Awaitable[bool]],
    wait: Callable[[float], Awaitable[object]],
    plan: WaitPlan | None,
) -> bool:
    """The asyncio twin of :func:`acquire_blocking`."""
    if plan is None:
        return await attempt(False)
    while True:
        waiting = plan.slice_s() if plan.may_wait() else 0.0
        if await attempt(waiting):
            return True
        if not waiting:
            return False
        await wait(plan.slice_s())
