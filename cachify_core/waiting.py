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

    def slice_s(self) -> float:
        """Seconds to sleep before the next attempt."""
        return max(0.0, min(self._poll_s, self._until - _now()))


def acquire_blocking(
    attempt: Callable[[bool], bool], wait: Callable[[float], object], plan: WaitPlan | None
) -> bool:
    """Run ``attempt(waiting)`` until it succeeds or the plan runs out (``None``: one try)."""
    if plan is None:
        return attempt(False)
    while True:
        waiting = plan.may_wait()
        if attempt(waiting):
            return True
        if not waiting:
            return False
        wait(plan.slice_s())


async def acquire_async(
    attempt: Callable[[bool], Awaitable[bool]],
    wait: Callable[[float], Awaitable[object]],
    plan: WaitPlan | None,
) -> bool:
    """The asyncio twin of :func:`acquire_blocking`."""
    if plan is None:
        return await attempt(False)
    while True:
        waiting = plan.may_wait()
        if await attempt(waiting):
            return True
        if not waiting:
            return False
        await wait(plan.slice_s())
