"""``rate_key`` + ``rate`` on real ``celery worker`` processes (2 prefork workers, 2 children each)
over a real Redis broker: 40 tasks sent at once at 10/s each run once, spend no retry, start no
more often than the limit admits (in any 1 s window at most 10 + 10 - 1), and take at least the
time the limit needs. Observed from outside through the observations database.
"""

from __future__ import annotations

import importlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ..windows import certain_peak
from .support import REDIS_ENV, ROOT, RedisDbs, WorkerProcess, wait_until

pytestmark = [
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
    pytest.mark.timeout(90),
]

#: Worker start-up on a loaded 2-core machine takes a few seconds; this bounds it.
READY_TIMEOUT_S = 45.0
TASKS = 40
#: Clock granularity between the store and the workers' clocks (all on this machine).
MARGIN_S = 0.2


class RateWorker(WorkerProcess):
    """A ``celery worker`` of :mod:`tests.celery.rate_app` (the same process set-up)."""

    def start(self, redis_base: str) -> RateWorker:
        import subprocess
        import sys

        env = {**os.environ, REDIS_ENV: redis_base, "PYTHONPATH": str(ROOT)}
        command = [
            sys.executable, "-m", "celery", "-A", "tests.celery.rate_app", "worker",
            f"--pool={self.pool}", f"--concurrency={self.concurrency}", f"--hostname={self.name}@%h",
            f"--queues={self.queues}", "--loglevel=INFO", "--without-gossip", "--without-mingle",
            "--without-heartbeat", f"--logfile={self.log}",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self


@pytest.fixture(scope="module")
def rate_app(redis_dbs: RedisDbs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    everything = (redis_dbs.broker, redis_dbs.backend, redis_dbs.cachify, redis_dbs.observe)
    redis_dbs.flush(*everything)
    previous = os.environ.get(REDIS_ENV)
    os.environ[REDIS_ENV] = redis_dbs.base  # this process imports the same app to send tasks
    module = importlib.import_module("tests.celery.rate_app")
    logs: Path = tmp_path_factory.mktemp("celery-rate-workers")
    workers = [RateWorker(f"r{i}", "prefork", 2, f"rate,r{i}", logs / f"r{i}.log") for i in (1, 2)]
    try:
        for worker in workers:
            worker.start(redis_dbs.base)
        for worker in workers:  # each answers on its own queue once it consumes
            module.hello.apply_async((worker.name,), queue=worker.queues.split(",")[-1]).get(
                timeout=READY_TIMEOUT_S
            )
        yield module
    finally:
        for worker in workers:
            worker.kill()
        if previous is None:
            os.environ.pop(REDIS_ENV, None)
        else:
            os.environ[REDIS_ENV] = previous
        redis_dbs.flush(*everything)


def test_40_tasks_at_10_per_second_run_once_within_the_limit(rate_app: ModuleType, observed: Any) -> None:
    run, rate = uuid.uuid4().hex[:8], rate_app.RATE
    for i in range(TASKS):
        rate_app.rated.delay(run, i)
    key = f"rate:{run}:starts"
    assert wait_until(lambda: observed.llen(key) >= TASKS, 25.0), f"{observed.llen(key)}/{TASKS} started"
    time.sleep(0.5)  # a duplicate would start within this
    starts = [v.decode().split() for v in observed.lrange(key, 0, -1)]
    assert sorted(int(i) for i, _, _ in starts) == list(range(TASKS))  # each once, none lost
    assert {int(r) for _, _, r in starts} == {0}  # no retry spent
    times = sorted(float(t) for _, t, _ in starts)
    # GCRA admits at most count + burst - 1 in any 1 s; these are the bodies' starts, and one
    # start may lag its admission by a delivery delay that varies: count + burst (as in
    # benchmarks/rate_accuracy.py)
    assert certain_peak([(t, t) for t in times], 1.0) <= 2 * rate, times
    assert times[-1] - times[0] >= (TASKS - rate) / rate - MARGIN_S, times
