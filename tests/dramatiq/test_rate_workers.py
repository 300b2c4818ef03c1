"""``rate_key`` + ``rate`` on real ``dramatiq`` worker processes (2, of 2 threads) over a real
Redis broker (:mod:`tests.dramatiq.rate_app`): 40 messages sent at once at 10/s each run once,
spend no retry, start no more often than the limit admits (in any 1 s window at most
10 + 10 - 1), and take at least the time the limit needs. Observed from outside through Redis.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from ..windows import certain_peak
from .conftest import ROOT, WORKER_STARTUP_S, WORKER_TIMEOUT_MS, stop_group
from .test_real_workers import wait_until
from .worker_app import REDIS_URL_ENV

pytestmark = pytest.mark.timeout(90)

TASKS = 40
#: Clock granularity between the store and the workers' clocks (all on this machine).
MARGIN_S = 0.2


@pytest.fixture
def rate_app(worker_redis: str) -> Iterator[ModuleType]:
    """:mod:`tests.dramatiq.rate_app` in this process (to send), and a ``dramatiq`` command of 2
    processes x 2 threads running it, ready (it answered a ping); stopped after the test."""
    from . import rate_app as module

    if worker_redis != module.BASE_URL:  # imported earlier for another server
        module = importlib.reload(module)
    env = dict(
        os.environ,
        **{REDIS_URL_ENV: worker_redis, "dramatiq_worker_timeout": str(WORKER_TIMEOUT_MS)},
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    group = subprocess.Popen(
        [str(Path(sys.executable).with_name("dramatiq")), "tests.dramatiq.rate_app:broker",
         "--processes", "2", "--threads", "2", "--skip-logging"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        token = uuid.uuid4().hex
        module.ping.send(token)
        deadline = time.monotonic() + WORKER_STARTUP_S
        obs = module.observations()
        while not any(v.decode().startswith(token) for v in obs.lrange("ping", 0, -1)):
            if group.poll() is not None:
                raise RuntimeError(f"dramatiq workers exited with code {group.returncode} on start")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dramatiq workers did not answer a ping in {WORKER_STARTUP_S}s")
            time.sleep(0.02)
        yield module
    finally:
        stop_group(group)


def test_40_messages_at_10_per_second_run_once_within_the_limit(rate_app: ModuleType) -> None:
    run, rate = uuid.uuid4().hex[:8], rate_app.RATE
    obs = rate_app.observations()
    for i in range(TASKS):
        rate_app.rated.send(run, i)
    key = f"rate:{run}:starts"
    wait_until(lambda: obs.llen(key) >= TASKS, 25.0, f"{TASKS} starts")
    time.sleep(0.5)  # a duplicate would start within this
    starts = [v.decode().split() for v in obs.lrange(key, 0, -1)]
    assert sorted(int(i) for i, _, _ in starts) == list(range(TASKS))  # each once, none lost
    assert {int(r) for _, _, r in starts} == {0}  # no retry spent
    times = sorted(float(t) for _, t, _ in starts)
    # GCRA admits at most count + burst - 1 in any 1 s; these are the bodies' starts, and one
    # start may lag its admission by a delivery delay that varies: count + burst (as in
    # benchmarks/rate_accuracy.py)
    assert certain_peak([(t, t) for t in times], 1.0) <= 2 * rate, times
    assert times[-1] - times[0] >= (TASKS - rate) / rate - MARGIN_S, times
