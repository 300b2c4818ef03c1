"""cachify's metrics from a real ``taskiq worker`` (1 worker process), read over HTTP.

The worker runs tests/taskiq/metrics_app.py, set up as docs/METRICS.md ("Taskiq") says:
taskiq's PrometheusMiddleware (multiprocess mode, its ``metrics_path`` here a fresh directory;
``server_port`` here a free one) serves the port, and cachify's metrics are enabled at
``WORKER_STARTUP`` so they land in the same files. The test sends known work and checks the
scraped counters equal it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis.asyncio as aredis

from ..metrics_http import Samples, check_gauges, check_work, scrape, verdicts, wait_for
from ..servers import free_port
from .conftest import eventually, running_workers, sending_side

pytestmark = pytest.mark.timeout(90)

APP = "tests.taskiq.metrics_app"
#: Bound of each batch of work, as the metrics show it done.
WORK_TIMEOUT_S = 20.0


@pytest.fixture
def metrics_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The worker's port and multiprocess directory; set here too (the sending side imports the
    app, whose middleware sets ``PROMETHEUS_MULTIPROC_DIR``: restored after the test)."""
    (tmp_path / "prometheus").mkdir()
    env = {
        "CACHIFY_TASKIQ_METRICS_PORT": str(free_port()),
        "CACHIFY_TASKIQ_METRICS_DIR": str(tmp_path / "prometheus"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", env["CACHIFY_TASKIQ_METRICS_DIR"])
    return env


@pytest.fixture
def worker(redis_base_url: str, metrics_env: dict[str, str]) -> Iterator[int]:
    with running_workers(redis_base_url, APP, count=1, extra_env=metrics_env):
        yield int(metrics_env["CACHIFY_TASKIQ_METRICS_PORT"])


@pytest.fixture
async def app(redis_base_url: str, worker: int, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ModuleType]:
    module = await sending_side(redis_base_url, APP, monkeypatch)
    try:
        yield module
    finally:
        await module.broker.shutdown()


async def test_worker_metrics_equal_the_work_done(app: ModuleType, worker: int) -> None:
    port = worker
    once, pool, square = app.once_job.task_name, app.pool_job.task_name, app.square.task_name
    r: Any = aredis.Redis.from_url(app.db_url(0))
    try:
        # Cache: 1 miss, then 2 hits.
        for _ in range(3):
            got = await (await app.square.kiq(3)).wait_result(check_interval=0.05, timeout=WORK_TIMEOUT_S)
            assert got.return_value == 9

        # Run-once: 6 sends, 2 of them duplicates of the running first one (skipped at run time).
        await app.once_job.kiq(1, 1.5)

        async def first_started() -> bool:
            return int(await r.llen("obs:ran:once_job")) == 1

        await eventually(first_started, WORK_TIMEOUT_S, "the first once_job started")
        for n in (1, 1, 2, 3, 4):
            await app.once_job.kiq(n, 0.0)

        def once_done(s: Samples) -> bool:
            return verdicts(s, once, "run") + verdicts(s, once, "skip") >= 6 and (
                s.get("cachify_released_total", kind="once", task=once) >= 4
            )

        await asyncio.to_thread(wait_for, port, once_done, WORK_TIMEOUT_S, "6 once_job deliveries done")

        # Pool of 1: 4 deliveries; the first runs, 3 park and are handed over one by one.
        for n in range(4):
            await app.pool_job.kiq(n, 0.4)

        def pool_done(s: Samples) -> bool:
            return s.get("cachify_released_total", kind="pool", task=pool) >= 4

        samples = await asyncio.to_thread(wait_for, port, pool_done, WORK_TIMEOUT_S, "4 pool_job runs done")
        check_work(samples, once, pool, square)
        assert sorted(int(v) for v in await r.lrange("obs:ran:pool_job", 0, -1)) == [0, 1, 2, 3]
        assert sorted(int(v) for v in await r.lrange("obs:ran:once_job", 0, -1)) == [1, 2, 3, 4]
        # One process: every parked entry was claimed where it parked.
        assert samples.get("cachify_waiting_room_wait_seconds_count", task=pool) == 3
        # taskiq's own metrics are on the same port.
        assert samples.get("received_tasks_total", task_name=pool) >= 4
        await asyncio.to_thread(check_gauges, port, pool)
        again = await asyncio.to_thread(scrape, port)
        assert again.get("cachify_acquired_total", kind="pool", task=pool) == 4
    finally:
        await r.aclose()
