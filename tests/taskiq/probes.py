"""Test tasks of either kind (async, or sync in Taskiq's thread pool) that report what they do."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from taskiq import AsyncBroker

KINDS = ["async", "sync"]


class Probe:
    """Counts runs and concurrency of a task; thread-safe (sync tasks run in threads)."""

    def __init__(self, seconds: float = 0.0, failures: int = 0) -> None:
        self.seconds = seconds
        self.failures = failures  #: the first ``failures`` runs raise RuntimeError
        self.hold = threading.Event()  #: run 0 (argument 0) waits for this, if ``hold_first``
        self.hold_first = False
        self.hold_all = False  #: every run waits for ``hold``
        self._lock = threading.Lock()
        self.runs = 0
        self.now = 0
        self.peak = 0
        self.ran: list[int] = []

    def enter(self) -> bool:
        with self._lock:
            self.runs += 1
            self.now += 1
            self.peak = max(self.peak, self.now)
            if self.failures > 0:
                self.failures -= 1
                return False
            return True

    def leave(self, i: int, completed: bool) -> None:
        with self._lock:
            self.now -= 1
            if completed:
                self.ran.append(i)


def declare(
    broker: AsyncBroker, kind: str, probe: Probe, body: Callable[[], Any] | None = None, **labels: Any
) -> Any:
    """Declare ``work(i: int) -> int`` (returns ``i * 10``) of ``kind`` with ``labels`` on ``broker``.

    ``body``: a context manager factory entered around the work (e.g. a stacked ``pool``)."""
    name = f"work-{kind}-{uuid.uuid4().hex[:8]}"
    if kind == "async":

        async def work(i: int) -> int:
            ok, completed = probe.enter(), False
            try:
                if body is not None:
                    async with body():
                        await _work_async(probe, i, ok)
                else:
                    await _work_async(probe, i, ok)
                completed = True
            finally:
                probe.leave(i, completed)
            return i * 10

        return broker.task(name, **labels)(work)

    def work_sync(i: int) -> int:
        ok, completed = probe.enter(), False
        try:
            if body is not None:
                with body():
                    _work_sync(probe, i, ok)
            else:
                _work_sync(probe, i, ok)
            completed = True
        finally:
            probe.leave(i, completed)
        return i * 10

    return broker.task(name, **labels)(work_sync)


async def _work_async(probe: Probe, i: int, ok: bool) -> None:
    if probe.hold_all or (probe.hold_first and i == 0):
        await asyncio.to_thread(probe.hold.wait, 20)
    await asyncio.sleep(probe.seconds)
    if not ok:
        raise RuntimeError(f"planned failure of {i}")


def _work_sync(probe: Probe, i: int, ok: bool) -> None:
    if probe.hold_all or (probe.hold_first and i == 0):
        probe.hold.wait(20)
    time.sleep(probe.seconds)
    if not ok:
        raise RuntimeError(f"planned failure of {i}")
