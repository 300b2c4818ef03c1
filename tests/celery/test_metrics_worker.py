"""cachify's metrics from a real prefork ``celery worker``, read over HTTP as Prometheus would.

The worker (2 prefork children) runs tests/celery/metrics_app.py, which enables the metrics the
way docs/METRICS.md ("Celery") says: prometheus_client's multiprocess mode, children enable
cachify's metrics, the main process serves them on one port. The test sends known work and
checks the scraped counters equal it, summed over both children.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from cachify_core.metrics import disable, enable_prometheus

from ..metrics_http import Samples, check_gauges, check_work, scrape, verdicts, wait_for
from ..servers import free_port
from .support import REDIS_ENV, RedisDbs, WorkerProcess, wait_until

pytestmark = [
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
    pytest.mark.timeout(90),
]

APP = "tests.celery.metrics_app"
#: Worker start-up on a loaded 2-core machine takes a few seconds; this bounds it.
READY_TIMEOUT_S = 45.0
#: Bound of each batch of work, as the metrics show it done.
WORK_TIMEOUT_S = 20.0


@pytest.fixture
def worker(
    redis_dbs: RedisDbs, observed: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, int, Path]]:
    redis_dbs.flush(redis_dbs.broker, redis_dbs.backend)
    monkeypatch.setenv(REDIS_ENV, redis_dbs.base)  # this process imports the app to send
    module = importlib.import_module(APP)
    port = free_port()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    proc = WorkerProcess(
        "metrics", "prefork", 2, module.QUEUE, tmp_path / "worker.log", app=APP,
        env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc), module.PORT_ENV: str(port)},
    )  # fmt: skip
    try:
        proc.start(redis_dbs.base)
        module.hello.delay("metrics").get(timeout=READY_TIMEOUT_S)
        yield module, port, multiproc
    finally:
        proc.kill()
        redis_dbs.flush(redis_dbs.broker, redis_dbs.backend)


def test_worker_metrics_equal_the_work_done(worker: tuple[ModuleType, int, Path], observed: Any) -> None:
    app, port, multiproc = worker
    once, pool, square = app.once_job.name, app.pool_job.name, app.square.name

    # Cache: 1 miss, then 2 hits.
    assert [app.square.delay(3).get(timeout=WORK_TIMEOUT_S) for _ in range(3)] == [9, 9, 9]

    # Run-once: 6 sends, 2 of them duplicates of the running first one (skipped at run time).
    app.once_job.delay(1, 1.5)
    assert wait_until(lambda: observed.llen("ran:once_job") == 1, WORK_TIMEOUT_S)
    for n in (1, 1, 2, 3, 4):
        app.once_job.delay(n, 0.0)

    def once_done(s: Samples) -> bool:
        return verdicts(s, once, "run") + verdicts(s, once, "skip") >= 6 and (
            s.get("cachify_released_total", kind="once", task=once) >= 4
        )

    wait_for(port, once_done, WORK_TIMEOUT_S, "6 once_job deliveries admitted and finished")

    # Pool of 1: 4 deliveries; the first runs, 3 park and are handed over one by one.
    for n in range(4):
        app.pool_job.delay(n, 0.4)

    def pool_done(s: Samples) -> bool:
        return s.get("cachify_released_total", kind="pool", task=pool) >= 4

    samples = wait_for(port, pool_done, WORK_TIMEOUT_S, "4 pool_job runs finished")
    check_work(samples, once, pool, square)
    assert sorted(int(v) for v in observed.lrange("ran:pool_job", 0, -1)) == [0, 1, 2, 3]
    assert sorted(int(v) for v in observed.lrange("ran:once_job", 0, -1)) == [1, 2, 3, 4]
    # Both children reported (one ran the first once_job while the other skipped its
    # duplicates): each writes its own counter_<pid>.db, the main process sums them.
    assert len(list(multiproc.glob("counter_*.db"))) == 2
    # Park and claim in the same child only (docs/METRICS.md, "Waiting-room wait"): which child
    # a hand-over's delivery reaches is Celery's choice, so anywhere from none to all three
    # (tests/test_metrics.py checks the values where park and claim share a process).
    assert 0 <= samples.get("cachify_waiting_room_wait_seconds_count", task=pool) <= 3
    # The pool gauges: each child writes them from the store (mostrecent), the main process serves.
    check_gauges(port, pool)
    # Queued mode: duplicates are refused at send, so the sender counts them, not the worker.
    sender = CollectorRegistry()
    enable_prometheus(sender)
    try:
        first = app.sent_once.delay(1, 0.5)
        assert [app.sent_once.delay(1, 0.0).id for _ in range(2)] == [first.id] * 2
        assert (
            sender.get_sample_value(
                "cachify_duplicate_at_send_total",
                {"kind": "once", "key": "m-sent-{n}", "task": app.sent_once.name},
            )
            == 2
        )
    finally:
        disable()
    assert first.get(timeout=WORK_TIMEOUT_S) == 1
    done = wait_for(
        port,
        lambda s: s.get("cachify_released_total", task=app.sent_once.name) == 1,
        WORK_TIMEOUT_S,
        "sent_once finished",
    )
    assert done.get("cachify_duplicate_at_send_total") == 0
    assert done.get("cachify_acquired_total", kind="once", task=app.sent_once.name) == 1
    # One scrape more changes nothing: the counters are the work, not the scrapes.
    assert scrape(port).get("cachify_acquired_total", kind="pool", task=pool) == 4
