"""Helpers shared by the test modules: threads that keep their outcome, bounded polling, calling
sync and async functions alike, installing the global instance, and spawned worker processes.

Fixtures shared the same way (``warnings_log``, ``raw``) live in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from multiprocessing.context import SpawnProcess
from typing import Any

import pytest

from cachify_core import Cachify
from cachify_core import instance as instance_module

#: Default upper bound of the waits below, in seconds.
WAIT_S = 5.0
#: The two flavours of every decorated function.
KINDS = ["sync", "async"]
#: What the warning about a lock lost before its release says.
LOST = "expired or changed hands"


# -- threads and polling ----------------------------------------------------------------------
class Worker(threading.Thread):
    """A thread that keeps its target's result or exception for :meth:`finish`."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout_s: float = WAIT_S * 2) -> Any:
        self.join(timeout_s)
        assert not self.is_alive(), "worker thread did not finish in time"
        if self.error is not None:
            raise self.error
        return self.result


def started(target: Callable[[], Any]) -> Worker:
    worker = Worker(target)
    worker.start()
    return worker


def wait_until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


async def await_until(predicate: Callable[[], Awaitable[bool] | bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.01) + 1):
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def crowd_threads(section: AbstractContextManager[Any], threads: int, rounds: int) -> dict[str, int]:
    """``threads`` threads each enter the one object ``section`` ``rounds`` times and stay 2 ms:
    how many were inside at once at most (``peak``), still are (``active``) and left (``done``)."""
    mutex = threading.Lock()
    stats = {"active": 0, "peak": 0, "done": 0}

    def work() -> None:
        for _ in range(rounds):
            with section:
                with mutex:
                    stats["active"] += 1
                    stats["peak"] = max(stats["peak"], stats["active"])
                time.sleep(0.002)
                with mutex:
                    stats["active"] -= 1
                    stats["done"] += 1

    workers = [started(work) for _ in range(threads)]
    for worker in workers:
        worker.finish(WAIT_S * 4)
    return stats


async def crowd_tasks(section: AbstractAsyncContextManager[Any], tasks: int, rounds: int) -> dict[str, int]:
    """:func:`crowd_threads` with asyncio tasks."""
    stats = {"active": 0, "peak": 0, "done": 0}

    async def work() -> None:
        for _ in range(rounds):
            async with section:
                stats["active"] += 1
                stats["peak"] = max(stats["peak"], stats["active"])
                await asyncio.sleep(0.002)
                stats["active"] -= 1
                stats["done"] += 1

    await asyncio.wait_for(asyncio.gather(*(work() for _ in range(tasks))), WAIT_S * 4)
    return stats


def lost_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and LOST in r.getMessage()]


# -- sync and async functions -----------------------------------------------------------------
async def invoke(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` and await the result if it is awaitable (sync and async alike)."""
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def counting(kind: str, body: Callable[[int, int], Any] = lambda a, b: a + b) -> tuple[Any, list[Any]]:
    """A function ``fn(a, b=0)`` of the given kind that records its calls."""
    calls: list[tuple[int, int]] = []
    if kind == "sync":

        def fn(a: int, b: int = 0) -> Any:
            calls.append((a, b))
            return body(a, b)

        return fn, calls

    async def afn(a: int, b: int = 0) -> Any:
        calls.append((a, b))
        await asyncio.sleep(0)
        return body(a, b)

    return afn, calls


class Counter:
    """Thread-safe numbering of computations: each run returns a value no other run returns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs = itertools.count(1)
        self.calls = 0

    def next(self) -> str:
        with self._lock:
            self.calls += 1
            return f"run-{next(self._runs)}"


# -- the global instance ----------------------------------------------------------------------
@contextlib.contextmanager
def as_global(instance: Cachify | None) -> Iterator[Cachify | None]:
    """``instance`` installed as the global one (``None``: no global) until the block ends."""
    previous = instance_module._global
    instance_module._global = instance
    try:
        yield instance
    finally:
        instance_module._global = previous


# -- spawned processes ------------------------------------------------------------------------
CTX = multiprocessing.get_context("spawn")


def start_all(target: Callable[..., None], arg_lists: list[tuple[Any, ...]]) -> list[SpawnProcess]:
    procs = [CTX.Process(target=target, args=args, daemon=True) for args in arg_lists]
    for p in procs:
        p.start()
    return procs


def join_all(procs: list[SpawnProcess], raw: Any, prefix: str, timeout_s: float) -> None:
    """Join every child by one shared deadline; terminate stragglers; fail on any child error
    (the workers push theirs to ``<prefix>errors`` on ``raw``)."""
    deadline = time.monotonic() + timeout_s
    try:
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:
        stragglers = [p for p in procs if p.is_alive()]
        for p in stragglers:
            p.terminate()
        for p in stragglers:
            p.join(5)
    errors = [e.decode() for e in raw.lrange(prefix + "errors", 0, -1)]
    assert not errors, "worker raised:\n" + "\n".join(errors)
    assert not stragglers, f"{len(stragglers)} worker(s) overran {timeout_s}s and were terminated"
    assert [p.exitcode for p in procs] == [0] * len(procs)


def sigkill(proc: SpawnProcess) -> float:
    """Kill ``proc`` with SIGKILL, as a crash would, and wait for it; when it was killed."""
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    proc.join(5)
    assert proc.exitcode == -signal.SIGKILL
    return killed_at


@contextlib.contextmanager
def reaped(proc: SpawnProcess) -> Iterator[SpawnProcess]:
    """``proc``, killed on the way out of the block if it still lives."""
    try:
        yield proc
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def assert_crash_hold_freed_by_expiry(
    c: Cachify, raw: Any, prefix: str, killed_at: float, ttl_s: float, margin_s: float
) -> None:
    """A waiter gets lock ``crash`` and a slot of pool ``crash`` within ``ttl_s + margin_s`` of
    ``killed_at`` (the dead holder's lease runs out), and no worker reported an error."""
    with c.lock("crash", nowait=False, timeout=5), c.pool("crash", 1, timeout=5):
        elapsed = time.monotonic() - killed_at
        assert c.pool("crash", 1).size() == 1
    assert elapsed < ttl_s + margin_s, f"took {elapsed:.2f}s after the kill (TTL {ttl_s}s)"
    assert not raw.lrange(prefix + "errors", 0, -1)
