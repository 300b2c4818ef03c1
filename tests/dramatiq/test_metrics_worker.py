"""cachify's metrics from a real ``dramatiq`` worker (1 process, 2 threads), read over HTTP.

The worker runs tests/dramatiq/metrics_app.py, set up as docs/METRICS.md ("Dramatiq") says:
dramatiq's Prometheus middleware serves the port (``dramatiq_prom_port``, here a free one)
from prometheus_client's multiprocess files (``dramatiq_prom_db``, here a fresh directory),
and cachify's metrics are enabled after worker boot so they land in the same files. The test
sends known work and checks the scraped counters equal it.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from ..metrics_http import Samples, check_gauges, check_work, scrape, verdicts, wait_for
from ..servers import free_port
from .conftest import WorkerGroup

pytestmark = pytest.mark.timeout(90)

#: Bound of each batch of work, as the metrics show it done.
WORK_TIMEOUT_S = 20.0
RESULT_TIMEOUT_MS = 20_000


def wait_len(app: ModuleType, key: str, n: int) -> None:
    """Poll the observations until ``key`` lists ``n`` entries (at most ``WORK_TIMEOUT_S``)."""
    obs, deadline = app.observations(), time.monotonic() + WORK_TIMEOUT_S
    while obs.llen(key) < n:
        assert time.monotonic() < deadline, f"{key} did not reach {n} entries in {WORK_TIMEOUT_S}s"
        time.sleep(0.02)


@pytest.fixture
def metrics_app(worker_redis: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # dramatiq's Prometheus module creates its directory when imported, here too (to send).
    monkeypatch.setenv("dramatiq_prom_db", str(tmp_path / "prometheus"))
    from . import metrics_app

    if worker_redis != metrics_app.BASE_URL:
        metrics_app = importlib.reload(metrics_app)
    return metrics_app


def test_worker_metrics_equal_the_work_done(
    metrics_app: ModuleType, start_workers: Callable[..., WorkerGroup], tmp_path: Path
) -> None:
    app, port = metrics_app, free_port()
    start_workers(
        processes=1, threads=2, queues=(app.QUEUE,), module=app,
        env={"dramatiq_prom_port": str(port), "dramatiq_prom_db": str(tmp_path / "prometheus")},
    )  # fmt: skip
    once, pool, square = "once_job", "pool_job", "square"

    # Cache: 1 miss, then 2 hits.
    for _ in range(3):
        got = app.square.send(3).get_result(backend=app.results, block=True, timeout=RESULT_TIMEOUT_MS)
        assert got == 9

    # Run-once: 6 sends, 2 of them duplicates of the running first one (skipped at run time).
    app.once_job.send(1, 1.5)
    wait_len(app, "ran:once_job", 1)
    for n in (1, 1, 2, 3, 4):
        app.once_job.send(n, 0.0)

    def once_done(s: Samples) -> bool:
        return verdicts(s, once, "run") + verdicts(s, once, "skip") >= 6 and (
            s.get("cachify_released_total", kind="once", task=once) >= 4
        )

    wait_for(port, once_done, WORK_TIMEOUT_S, "6 once_job deliveries admitted and finished")

    # Pool of 1: 4 deliveries; the first runs, 3 park and are handed over one by one.
    for n in range(4):
        app.pool_job.send(n, 0.4)

    def pool_done(s: Samples) -> bool:
        return s.get("cachify_released_total", kind="pool", task=pool) >= 4

    samples = wait_for(port, pool_done, WORK_TIMEOUT_S, "4 pool_job runs finished")
    check_work(samples, once, pool, square)
    obs = app.observations()
    assert sorted(int(v) for v in obs.lrange("ran:pool_job", 0, -1)) == [0, 1, 2, 3]
    assert sorted(int(v) for v in obs.lrange("ran:once_job", 0, -1)) == [1, 2, 3, 4]
    # One process: every parked entry was claimed where it parked.
    assert samples.get("cachify_waiting_room_wait_seconds_count", task=pool) == 3
    # dramatiq's own metrics are on the same port.
    assert samples.get("dramatiq_messages_total", actor_name=pool) >= 4
    check_gauges(port, pool)
    assert scrape(port).get("cachify_acquired_total", kind="pool", task=pool) == 4
