"""Worker functions for ``test_multiprocess``: top-level so a "spawn" child can import them.

:func:`connect` and :func:`reporting` serve the workers of ``mp_workers_cache`` too.

Each worker builds its own ``Cachify`` on the URL it is given (nothing is inherited from the
parent), does bounded work, and reports through Redis keys under ``prefix``: any exception is
pushed as a traceback to ``<prefix>errors`` before the process exits non-zero.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from multiprocessing.synchronize import Barrier, Event
from typing import Any

import redis

from cachify_core import Cachify, init_cachify

#: No worker runs longer than this, whatever happens to the lock or pool it waits on.
WORKER_BUDGET_S = 20.0
#: How long a worker waits for its siblings at the start line.
BARRIER_TIMEOUT_S = 20.0


def connect(url: str, prefix: str, *, is_global: bool = False) -> tuple[Cachify, redis.Redis]:
    """A worker's own ``Cachify`` on ``url`` (the global one if ``is_global``) and a raw client."""
    c = init_cachify(url=url, is_global=is_global, prefix=prefix, lock_poll_interval=0.05)
    raw = redis.Redis.from_url(url, socket_timeout=10)
    raw.ping()  # connect before the start line, so connection set-up does not skew the race
    return c, raw


def reporting(url: str, prefix: str, body: Callable[[], None]) -> None:
    """Run ``body``; push any exception's traceback to ``<prefix>errors`` and re-raise it."""
    try:
        body()
    except BaseException:
        try:
            client = redis.Redis.from_url(url, socket_timeout=5)
            client.rpush(prefix + "errors", traceback.format_exc())
        finally:
            raise


def _check_budget(started: float, what: str) -> None:
    if time.monotonic() - started > WORKER_BUDGET_S:
        raise TimeoutError(f"{what}: worker ran past its {WORKER_BUDGET_S}s budget")


def lock_worker(url: str, prefix: str, worker_id: int, iterations: int, start: Barrier) -> None:
    """``iterations`` times: take the shared lock and run a critical section that records
    (1) the INCR'd occupancy, which must be 1, (2) its [start, end] interval, and (3) a
    deliberately non-atomic GET/SET increment that loses updates unless sections are exclusive."""

    def body() -> None:
        c, raw = connect(url, prefix)
        lk = c.lock("shared", nowait=False, timeout=30)
        start.wait(BARRIER_TIMEOUT_S)
        began = time.monotonic()
        for i in range(iterations):
            _check_budget(began, "lock_worker")
            with lk:
                entered = time.monotonic_ns()
                inside = raw.incr(prefix + "inside")
                if inside != 1:
                    raw.rpush(prefix + "violations", f"worker {worker_id} iter {i}: {inside} inside")
                value = int(raw.get(prefix + "unsafe") or 0)
                time.sleep(0.001 + 0.001 * (i % 3))  # 1-3 ms
                raw.set(prefix + "unsafe", value + 1)
                raw.decr(prefix + "inside")
                left = time.monotonic_ns()
                raw.rpush(prefix + "intervals", f"{entered}:{left}:{worker_id}")

    reporting(url, prefix, body)


def pool_worker(
    url: str, prefix: str, worker_id: int, iterations: int, max_size: int, start: Barrier
) -> None:
    """``iterations`` times: take a slot of the shared pool and record how many holders are
    inside right now (INCR on entry, DECR before release)."""

    def body() -> None:
        c, raw = connect(url, prefix)
        pl = c.pool("p", max_size, timeout=30)
        start.wait(BARRIER_TIMEOUT_S)
        began = time.monotonic()
        for _ in range(iterations):
            _check_budget(began, "pool_worker")
            with pl:
                raw.rpush(prefix + "observed", raw.incr(prefix + "inside"))
                time.sleep(0.01)
                raw.decr(prefix + "inside")
                raw.incr(prefix + "done")

    reporting(url, prefix, body)


def crash_holder(url: str, prefix: str, holding: Event) -> None:
    """Take lock ``crash`` (exp=1 s) and a slot of pool ``crash`` (max_size=1, slot_exp=1 s),
    say so, then hang until killed (bounded: exits on its own after the budget)."""

    def body() -> None:
        c, _raw = connect(url, prefix)
        c.lock("crash", exp=1).__enter__()
        c.pool("crash", 1, slot_exp=1).__enter__()
        holding.set()
        time.sleep(WORKER_BUDGET_S)

    reporting(url, prefix, body)


def once_worker(url: str, prefix: str, worker_id: int, start: Barrier) -> None:
    """Call one ``@once`` job at the same moment as its siblings; record what the call returned."""

    def body() -> None:
        c, raw = connect(url, prefix)

        @c.once("job", return_on_locked="LOCKED")
        def job() -> str:
            time.sleep(0.3)
            raw.incr(prefix + "runs")
            return "RAN"

        start.wait(BARRIER_TIMEOUT_S)
        result: Any = job()
        raw.rpush(prefix + "results", f"{result}")

    reporting(url, prefix, body)
