"""Metrics (cachify_core.metrics): real work on a real Redis, then the counters, histograms and
gauges must equal the work done — through prometheus_client's registry, over HTTP from a
separate process, and through OpenTelemetry's in-memory reader."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from cachify_core import (
    Cachify,
    CachifyLockError,
    CachifyPoolFullError,
    CachifyRateLimitedError,
    init_cachify,
)
from cachify_core.backends.base import Handover
from cachify_core.metrics import disable, enable_otel, enable_prometheus, events
from cachify_core.tasks import Delivery, TaskPolicy, Verdict, parse_task_options

from .metrics_http import wait_for
from .servers import free_port
from .support import Worker

TASK = "tasks.job"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def backend() -> str:
    """Every test here runs on the real Redis (the fixtures' ``redis`` row)."""
    return "redis"


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    reg = CollectorRegistry()
    enable_prometheus(reg)
    try:
        yield reg
    finally:
        disable()


def value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value, 0.0 when it was never reported."""
    labels.setdefault("task", "")
    got = reg.get_sample_value(name, labels)
    return 0.0 if got is None else got


def counter(reg: CollectorRegistry, event: str, kind: str, key: str, task: str = "") -> float:
    return value(reg, f"cachify_{event}_total", kind=kind, key=key, task=task)


def test_off_by_default_and_core_imports_nothing_third_party() -> None:
    assert events.sink is None
    code = (
        "import sys, cachify_core, cachify_core.tasks, cachify_core.metrics\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prometheus_client', 'opentelemetry'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_lock_counters_wait_and_hold(cachify: Cachify, registry: CollectorRegistry) -> None:
    for _ in range(3):
        with cachify.lock("res"):
            time.sleep(0.01)
    with cachify.lock("res"), pytest.raises(CachifyLockError), cachify.lock("res"):
        pass
    assert counter(registry, "acquired", "lock", "res") == 4
    assert counter(registry, "released", "lock", "res") == 4
    assert counter(registry, "denied", "lock", "res") == 1
    assert value(registry, "cachify_hold_seconds_count", kind="lock", key="res") == 4
    assert value(registry, "cachify_hold_seconds_sum", kind="lock", key="res") >= 0.03

    holding = threading.Event()

    def hold() -> None:
        with cachify.lock("w"):
            holding.set()
            time.sleep(0.3)

    worker = Worker(hold)
    worker.start()
    assert holding.wait(5)
    with cachify.lock("w", nowait=False, timeout=5):
        pass
    worker.finish()
    assert value(registry, "cachify_lock_wait_seconds_count", kind="lock", key="w") == 1
    assert 0.15 <= value(registry, "cachify_lock_wait_seconds_sum", kind="lock", key="w") < 5


def test_expired_counts_each_lost_hold_once(cachify: Cachify, registry: CollectorRegistry) -> None:
    with cachify.lock("short", exp=0.2):
        time.sleep(0.4)  # its TTL runs out: the release finds it gone
    renewed = cachify.lock("renewed", exp=0.3, auto_renew=True)
    with renewed:
        renewed.force_release()
        deadline = time.monotonic() + 5
        while counter(registry, "expired", "lock", "renewed") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)  # the renewal (every 0.1 s) finds it gone
    assert counter(registry, "expired", "lock", "short") == 1
    assert counter(registry, "expired", "lock", "renewed") == 1  # not again at the release
    assert counter(registry, "released", "lock", "short") == 0
    assert counter(registry, "released", "lock", "renewed") == 0


def test_pool_contention_and_occupancy_gauge(cachify: Cachify, registry: CollectorRegistry) -> None:
    p = cachify.pool("p", 2)
    with p, p:
        assert value(registry, "cachify_pool_occupancy", key="p") == 2
        with pytest.raises(CachifyPoolFullError), p:
            pass
    assert value(registry, "cachify_pool_occupancy", key="p") == 0
    assert counter(registry, "acquired", "pool", "p") == 2
    assert counter(registry, "denied", "pool", "p") == 1
    assert counter(registry, "released", "pool", "p") == 2

    @cachify.pooled("job-{n}", 1)
    def job(n: int) -> int:
        return n

    assert [job(1), job(2), job(1)] == [1, 2, 1]
    assert counter(registry, "acquired", "pool", "job-{n}") == 3  # the template, not job-1/job-2
    assert value(registry, "cachify_hold_seconds_count", kind="pool", key="job-{n}") == 3

    waiting = cachify.pool("q", 1, timeout=5)
    holding = threading.Event()

    def hold() -> None:
        with cachify.pool("q", 1):
            holding.set()
            time.sleep(0.3)

    worker = Worker(hold)
    worker.start()
    assert holding.wait(5)
    with waiting:
        pass
    worker.finish()
    assert value(registry, "cachify_lock_wait_seconds_count", kind="pool", key="q") == 1
    assert value(registry, "cachify_lock_wait_seconds_sum", kind="pool", key="q") >= 0.15


def test_once_rate_and_cache(cachify: Cachify, registry: CollectorRegistry) -> None:
    @cachify.once("o-{x}")
    def work(x: int, inner: bool = True) -> str:
        if inner:
            assert work(x, False) is None  # overlapping call: skipped
        return "ran"

    assert work(1) == "ran"
    assert counter(registry, "acquired", "once", "o-{x}") == 1
    assert counter(registry, "denied", "once", "o-{x}") == 1
    assert counter(registry, "released", "once", "o-{x}") == 1

    limit = cachify.rate_limit("api", "2/m", nowait=True)
    limit.acquire()
    limit.acquire()
    with pytest.raises(CachifyRateLimitedError):
        limit.acquire()
    assert counter(registry, "rate_limited", "rate", "api") == 1

    @cachify.cached("sq-{x}")
    def square(x: int) -> int:
        return x * x

    assert [square(1), square(1), square(2), square(1)] == [1, 1, 4, 1]
    assert counter(registry, "cache_hit", "cache", "sq-{x}") == 2
    assert counter(registry, "cache_miss", "cache", "sq-{x}") == 2
    assert counter(registry, "cache_error", "cache", "sq-{x}") == 0

    dead = init_cachify(url=f"redis://127.0.0.1:{free_port()}", is_global=False)

    @dead.cached("sq-{x}")
    def square_uncached(x: int) -> int:
        return x * x

    assert square_uncached(3) == 9  # fails open: the store is unreachable
    assert counter(registry, "cache_error", "cache", "sq-{x}") == 1


async def test_async_lock_and_pool(cachify: Cachify, registry: CollectorRegistry) -> None:
    async with cachify.lock("al"):
        await asyncio.sleep(0)
    async with cachify.pool("ap", 1):
        pass

    @cachify.once("ao-{x}")
    async def work(x: int) -> int:
        return x

    assert await work(1) == 1
    assert counter(registry, "acquired", "lock", "al") == counter(registry, "released", "lock", "al") == 1
    assert counter(registry, "acquired", "pool", "ap") == counter(registry, "released", "pool", "ap") == 1
    assert counter(registry, "released", "once", "ao-{x}") == 1


# -- the task layer, through Delivery as integrations drive it ---------------------------------
def job(x: int) -> int:
    return x


def policy(cachify: Cachify, **raw: Any) -> TaskPolicy:
    return TaskPolicy(parse_task_options(TASK, job, raw), cachify)


class Broker:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def publish(self, handed: Sequence[Handover]) -> None:
        self.sent.extend((h.entry_id, json.loads(h.payload)) for h in handed)

    def delivery(self, p: TaskPolicy, task_id: str, x: int, reservation: str | None = None) -> Delivery:
        message = {"id": task_id, "x": x}
        return Delivery(
            p,
            task_id,
            (x,),
            {},
            reservation=reservation,
            payload=lambda: json.dumps(message).encode(),
            publish=self.publish,
        )


def test_task_parking_hand_over_and_verdicts(cachify: Cachify, registry: CollectorRegistry) -> None:
    p = policy(cachify, pool_key="p-{x}", pool_max_size=1)
    broker = Broker()
    first = broker.delivery(p, "t0", 0)
    assert first.admit().verdict is Verdict.RUN
    for i in (1, 2, 3):
        assert broker.delivery(p, f"t{i}", 0).admit().verdict is Verdict.PARKED
    assert value(registry, "cachify_waiting_room_parked", key="p-{x}", task=TASK) == 3
    assert value(registry, "cachify_pool_occupancy", key="p-{x}", task=TASK) == 1
    assert value(registry, "cachify_waiting_room_oldest_wait_seconds", key="p-{x}", task=TASK) >= 0
    time.sleep(0.05)
    first.succeeded(0)
    for _ in range(3):
        entry_id, message = broker.sent.pop(0)
        copy = broker.delivery(p, message["id"], message["x"], reservation=entry_id)
        assert copy.admit().verdict is Verdict.RUN
        copy.succeeded(0)
    assert broker.sent == []
    labels = {"kind": "pool", "key": "p-{x}", "task": TASK}
    assert counter(registry, "parked", **labels) == 3
    assert counter(registry, "handed_over", **labels) == 3
    assert counter(registry, "acquired", **labels) == 4
    assert counter(registry, "released", **labels) == 4
    assert value(registry, "cachify_hold_seconds_count", **labels) == 4
    assert value(registry, "cachify_waiting_room_wait_seconds_count", **labels) == 3
    assert value(registry, "cachify_waiting_room_wait_seconds_sum", **labels) >= 3 * 0.05
    assert value(registry, "cachify_task_verdicts_total", task=TASK, verdict="run") == 4
    assert value(registry, "cachify_task_verdicts_total", task=TASK, verdict="parked") == 3
    assert value(registry, "cachify_waiting_room_parked", key="p-{x}", task=TASK) == 0
    assert value(registry, "cachify_pool_occupancy", key="p-{x}", task=TASK) == 0


def test_task_duplicates_requeue_and_cache(cachify: Cachify, registry: CollectorRegistry) -> None:
    p = policy(cachify, once_key="o-{x}")
    assert not p.claim("t1", (1,), {}).duplicate
    assert p.claim("t2", (1,), {}).duplicate  # not sent
    assert counter(registry, "duplicate_at_send", "once", "o-{x}", TASK) == 1
    late = Delivery(p, "t3", (1,), {})  # sent before t1's claim, say: skipped at its run
    assert late.admit().verdict is Verdict.SKIP
    assert counter(registry, "duplicate_at_run", "once", "o-{x}", TASK) == 1
    run = Delivery(p, "t1", (1,), {})
    assert run.admit().verdict is Verdict.RUN
    run.succeeded(1)
    assert counter(registry, "acquired", "once", "o-{x}", TASK) == 1
    assert counter(registry, "released", "once", "o-{x}", TASK) == 1

    full = policy(cachify, pool_key="f", pool_max_size=1)
    holder = Delivery(full, "h", (0,), {})
    assert holder.admit().verdict is Verdict.RUN
    bounced = Delivery(full, "b", (0,), {})  # no publisher: it cannot park, so it is requeued
    assert bounced.admit().verdict is Verdict.REQUEUE
    bounced.requeue_published()
    holder.succeeded(0)
    assert counter(registry, "requeued", "pool", "f", TASK) == 1
    assert counter(registry, "denied", "pool", "f", TASK) == 0  # a task's full pool is a verdict
    assert value(registry, "cachify_task_verdicts_total", task=TASK, verdict="requeue") == 1

    cached = policy(cachify, cache_key="c-{x}")
    miss = Delivery(cached, "c1", (5,), {})
    assert miss.admit().verdict is Verdict.RUN
    miss.succeeded(25)
    assert Delivery(cached, "c2", (5,), {}).admit().verdict is Verdict.CACHED
    assert counter(registry, "cache_miss", "cache", "c-{x}", TASK) == 1
    assert counter(registry, "cache_hit", "cache", "c-{x}", TASK) == 1
    assert value(registry, "cachify_task_verdicts_total", task=TASK, verdict="cached") == 1


# -- /metrics over HTTP from a separate process -------------------------------------------------
@pytest.mark.parametrize("mode", ["in-process", "multiprocess"])
def test_metrics_endpoint_of_a_separate_process(flushed_redis_url: str, mode: str, tmp_path: Path) -> None:
    """In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, as under a prefork worker) the
    counters come from the files and the pool gauges from the refresh thread's writes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if mode == "multiprocess":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.metrics_server", flushed_redis_url, "M-"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the script prints within seconds or exits
        assert line.startswith("PORT "), line
        port = int(line.split()[1])
        # The gauge is read on scrape, or (multiprocess) within one 0.2 s refresh.
        samples = wait_for(
            port, lambda s: s.get("cachify_pool_occupancy", key="workers") == 1, 10, "occupancy 1"
        )
    finally:
        proc.kill()
        proc.wait(10)

    def got(name: str, **labels: str) -> float:
        return samples.get(name, **labels, task="")

    assert got("cachify_acquired_total", kind="lock", key="job-lock") == 4
    assert got("cachify_released_total", kind="lock", key="job-lock") == 4
    assert got("cachify_denied_total", kind="lock", key="job-lock") == 1
    assert got("cachify_hold_seconds_count", kind="lock", key="job-lock") == 4
    assert got("cachify_cache_miss_total", kind="cache", key="square-{x}") == 2
    assert got("cachify_cache_hit_total", kind="cache", key="square-{x}") == 1
    assert got("cachify_acquired_total", kind="pool", key="workers") == 1
    assert got("cachify_pool_occupancy", key="workers") == 1
    assert got("cachify_waiting_room_parked", key="workers") == 0
    if mode == "multiprocess":
        assert list(tmp_path.glob("gauge_mostrecent_*.db"))


def test_bad_bounds_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match="gauge_refresh_s must be a number of seconds > 0, got 0"):
        enable_prometheus(CollectorRegistry(), gauge_refresh_s=0)
    with pytest.raises(ValueError, match="max_tracked_pools must be an int >= 0"):
        enable_prometheus(CollectorRegistry(), max_tracked_pools=-1)
    assert events.sink is None


# -- OpenTelemetry --------------------------------------------------------------------------------
def test_otel_reports_the_same_counters(cachify: Cachify) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    enable_otel(provider)
    try:
        for _ in range(3):
            with cachify.lock("res"):
                pass
        with cachify.lock("res"), pytest.raises(CachifyLockError), cachify.lock("res"):
            pass
        p = cachify.pool("p", 1)
        p.__enter__()
        data = reader.get_metrics_data()
        p.__exit__(None, None, None)
    finally:
        disable()
        provider.shutdown()
    points: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    points[(metric.name, tuple(sorted(point.attributes.items())))] = point
    lock_labels = (("key", "res"), ("kind", "lock"), ("task", ""))
    assert points[("cachify_acquired", lock_labels)].value == 4
    assert points[("cachify_released", lock_labels)].value == 4
    assert points[("cachify_denied", lock_labels)].value == 1
    assert points[("cachify_hold_seconds", lock_labels)].count == 4
    assert points[("cachify_pool_occupancy", (("key", "p"), ("task", "")))].value == 1
