"""The Prometheus adapter (extra ``prometheus``: ``prometheus_client``). Counters and histograms
are updated as events happen (one cached child per label set, so an event costs a dict lookup
and the instrument's own update); the gauges are a collector that reads the tracked pools from
the store when ``/metrics`` is scraped.

In prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before it was
imported: Celery prefork, Dramatiq's and Taskiq's Prometheus middlewares) another process
serves the files and never calls this process's collectors, so the gauges are plain
``mostrecent`` gauges instead, refreshed from the store by a daemon thread every
``gauge_refresh_s`` (the same 2 round trips per tracked pool). The values are store-wide, so
the most recent write of any process is the value.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .recorder import BUCKETS_S, COUNTERS, HISTOGRAMS, Labels, Recorder

__all__ = ["PrometheusRecorder"]

_LABELS = ("kind", "key", "task")
#: Seconds between two store reads of the gauges in multiprocess mode (default).
GAUGE_REFRESH_S = 10.0
_GAUGES = (
    ("occupancy", "cachify_pool_occupancy", "Slots taken in the pool (store-wide)"),
    (
        "parked",
        "cachify_waiting_room_parked",
        "Deliveries parked in the pool's waiting room (store-wide)",
    ),
    (
        "oldest_wait_s",
        "cachify_waiting_room_oldest_wait_seconds",
        "How long the oldest parked delivery has waited (store-wide)",
    ),
)


def multiprocess_mode() -> bool:
    """Whether prometheus_client keeps values in ``PROMETHEUS_MULTIPROC_DIR`` files (decided
    when it was first imported)."""
    return values.ValueClass is not values.MutexValue


class _PoolCollector(Collector):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = [
            (field, GaugeMetricFamily(name, doc, labels=["key", "task"])) for field, name, doc in _GAUGES
        ]
        for r in self.recorder.read_pools():
            for field, family in families:
                family.add_metric([r.key, r.task], getattr(r, field))
        for _, family in families:
            yield family

    def describe(self) -> list[Any]:
        return []  # read on collect only: registering must not reach the store


class _RefreshedGauges:
    """Multiprocess mode: the pool gauges as ``mostrecent`` gauges, set from the store every
    ``interval_s`` by a daemon thread (started with the first refresh; stopped by :meth:`stop`)."""

    def __init__(self, recorder: Recorder, registry: CollectorRegistry, interval_s: float) -> None:
        self.recorder = recorder
        self.interval_s = interval_s
        self.gauges = [
            (field, Gauge(name, doc, ["key", "task"], registry=registry, multiprocess_mode="mostrecent"))
            for field, name, doc in _GAUGES
        ]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cachify-metrics-gauges", daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        """One reading of every tracked pool into the gauges (2 round trips per pool)."""
        for r in self.recorder.read_pools():
            for field, gauge in self.gauges:
                gauge.labels(r.key, r.task).set(getattr(r, field))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except Exception:  # never let a reading end the thread; the next one tries again
                continue

    def stop(self) -> None:
        self._stop.set()


class PrometheusRecorder(Recorder):
    """``gauge_refresh_s``: in multiprocess mode, seconds between two store readings of the
    pool gauges (:data:`GAUGE_REFRESH_S`); unused otherwise (the gauges are read on scrape)."""

    def __init__(
        self, registry: CollectorRegistry, gauge_refresh_s: float = GAUGE_REFRESH_S, **bounds: int
    ) -> None:
        super().__init__(**bounds)
        if (
            isinstance(gauge_refresh_s, bool)
            or not isinstance(gauge_refresh_s, (int, float))
            or gauge_refresh_s <= 0
        ):
            raise ValueError(
                f"metrics: gauge_refresh_s must be a number of seconds > 0, got {gauge_refresh_s!r}"
            )
        self.registry = registry
        self._counters = {
            name: Counter(f"cachify_{name}", f"cachify: {name.replace('_', ' ')}", _LABELS, registry=registry)
            for name in COUNTERS
        }
        self._histograms = {
            name: Histogram(
                f"cachify_{name}_seconds",
                f"cachify: {name.replace('_', ' ')} (seconds)",
                _LABELS,
                registry=registry,
                buckets=BUCKETS_S,
            )
            for name in HISTOGRAMS
        }
        self._verdicts = Counter(
            "cachify_task_verdicts",
            "cachify: task admissions by verdict",
            ("task", "verdict"),
            registry=registry,
        )
        self.collector: _PoolCollector | None = None
        self.refreshed: _RefreshedGauges | None = None
        if multiprocess_mode():
            if self.max_tracked_pools > 0:  # 0 turns the gauges off: no thread either
                self.refreshed = _RefreshedGauges(self, registry, float(gauge_refresh_s))
        else:
            self.collector = _PoolCollector(self)
            registry.register(self.collector)
        self._children: dict[tuple[str, Labels], Any] = {}

    def _child(self, family: dict[str, Any], name: str, labels: Labels) -> Any:
        child = self._children.get((name, labels))
        if child is None:
            child = self._children[(name, labels)] = family[name].labels(*labels)
        return child

    def _inc(self, event: str, labels: Labels, n: int) -> None:
        self._child(self._counters, event, labels).inc(n)

    def _observe(self, histogram: str, labels: Labels, seconds: float) -> None:
        self._child(self._histograms, histogram, labels).observe(seconds)

    def _verdict(self, task: str, verdict: str) -> None:
        self._verdicts.labels(task, verdict).inc()

    def totals(self, event: str) -> dict[str, float]:
        """This process's count of ``event`` (a name in ``COUNTERS``) so far, summed per ``key``
        label over kinds and tasks (read by the dashboard for cache hit rates)."""
        sums: dict[str, float] = {}
        for family in self._counters[event].collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = sample.labels.get("key", "")
                    sums[key] = sums.get(key, 0.0) + sample.value
        return sums

    def unregister(self) -> None:
        """Take every cachify metric off the registry (what :func:`~cachify_core.metrics.disable` does)."""
        collectors: list[Any] = [*self._counters.values(), *self._histograms.values(), self._verdicts]
        if self.collector is not None:
            collectors.append(self.collector)
        if self.refreshed is not None:
            self.refreshed.stop()
            collectors.extend(gauge for _, gauge in self.refreshed.gauges)
        for collector in collectors:
            self.registry.unregister(collector)
