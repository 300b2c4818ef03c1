"""Worker for ``test_rate``'s cross-process test: top-level so a "spawn" child can import it.

The worker builds its own ``Cachify`` on the URL, then, for a fixed time, tries the shared
limiter without waiting, sleeping the reported ``retry_after_s`` when refused. Each admission
is reported as ``"<t0>:<t1>"`` (``time.time()`` just before the try and just after its answer),
so the server's admission instant is known to lie within ``[t0, t1]``.
"""

from __future__ import annotations

import time
from multiprocessing.synchronize import Barrier

from cachify_core import CachifyRateLimitedError

from .mp_workers import BARRIER_TIMEOUT_S, connect, reporting


def rate_worker(url: str, prefix: str, rate: str, burst: int, duration_s: float, start: Barrier) -> None:
    def body() -> None:
        c, raw = connect(url, prefix)
        limiter = c.rate_limit("shared", rate, burst=burst, nowait=True)
        limiter.remaining()  # connect and load the script before the start line
        start.wait(BARRIER_TIMEOUT_S)
        admitted: list[str] = []
        stop = time.monotonic() + duration_s
        for _ in range(100_000):  # bounded; the clock ends it long before
            if time.monotonic() >= stop:
                break
            t0 = time.time()
            try:
                limiter.acquire()
            except CachifyRateLimitedError as exc:
                time.sleep(min(exc.retry_after_s, max(0.0, stop - time.monotonic())))
                continue
            admitted.append(f"{t0}:{time.time()}")
        if admitted:
            raw.rpush(prefix + "admitted", *admitted)

    reporting(url, prefix, body)
