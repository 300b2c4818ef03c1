"""Worker functions for ``test_leases`` / ``test_stampede``: top-level so a "spawn" child can import them.

Each worker builds its own ``Cachify`` on the URL it is given (installed as the global one in
that fresh interpreter, since ``auto_renew`` and ``single_flight`` are options of the top-level
API), does bounded work and reports through Redis keys under ``prefix``: any exception is
pushed as a traceback to ``<prefix>errors`` before the process exits non-zero.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import uuid
from multiprocessing.synchronize import Barrier, Event

from cachify_core import cached, lock, pool

from .mp_workers import BARRIER_TIMEOUT_S, WORKER_BUDGET_S, connect, reporting

#: How long one stampede computation takes (long enough for every caller to miss first).
COMPUTE_S = 0.5


def renewing_holder(url: str, prefix: str, ttl_s: float, holding: Event) -> None:
    """Take lock ``crash`` (exp=ttl_s) and a slot of pool ``crash`` (max_size=1, slot_exp=ttl_s),
    both auto-renewed, say so, then "work" until killed (bounded: exits after the budget)."""

    def body() -> None:
        connect(url, prefix, is_global=True)
        lock("crash", exp=ttl_s, auto_renew=True).__enter__()
        pool("crash", 1, slot_exp=ttl_s, auto_renew=True).__enter__()
        holding.set()
        deadline = time.monotonic() + WORKER_BUDGET_S
        for _ in range(int(WORKER_BUDGET_S / 0.05)):
            if time.monotonic() > deadline:
                break
            sum(range(10_000))  # some CPU work between sleeps
            time.sleep(0.05)

    reporting(url, prefix, body)


def stampede_worker(
    url: str, prefix: str, worker_id: int, callers: int, single_flight: bool, start: Barrier
) -> None:
    """``callers`` threads of this process call one cached function at the same moment as the
    other processes' threads. The function INCRs ``<prefix>computations`` and returns a value
    unique to that computation; every caller pushes what it got to ``<prefix>results``."""

    def body() -> None:
        _c, raw = connect(url, prefix, is_global=True)

        @cached("stampede", single_flight=single_flight)
        def compute() -> str:
            raw.incr(prefix + "computations")
            time.sleep(COMPUTE_S)
            return f"computed-by-{os.getpid()}-{uuid.uuid4().hex}"

        errors: list[str] = []
        go = threading.Barrier(callers + 1)

        def caller() -> None:
            try:
                go.wait(BARRIER_TIMEOUT_S)
                raw.rpush(prefix + "results", compute())
            except BaseException:
                errors.append(traceback.format_exc())

        threads = [threading.Thread(target=caller, daemon=True) for _ in range(callers)]
        for t in threads:
            t.start()
        start.wait(BARRIER_TIMEOUT_S)  # every process is ready
        go.wait(BARRIER_TIMEOUT_S)  # release this process's callers
        deadline = time.monotonic() + WORKER_BUDGET_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            raise TimeoutError(f"worker {worker_id}: callers still running after {WORKER_BUDGET_S}s")
        if errors:
            raise RuntimeError(f"worker {worker_id}: a caller failed:\n" + "\n".join(errors))

    reporting(url, prefix, body)
