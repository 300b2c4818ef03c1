"""How an acquire waits: try, register as a waiter, sleep until woken or the poll bound.

Shared by locks, pools and single-flight fills, blocking and asyncio alike: the loop itself
is :func:`cachify_core.steps.acquire_steps`, driven by either driver. A wake-up comes from the
backend's release signal (milliseconds after a release); ``poll_s`` bounds every sleep so
expiries (which signal nobody) are noticed too.
"""

from __future__ import annotations

import math
import time

__all__ = ["WaitPlan"]

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
