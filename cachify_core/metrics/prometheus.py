"""The Prometheus adapter (extra ``prometheus``: ``prometheus_client``). Counters and histograms
are updated as events happen (one cached child per label set, so an event costs a dict lookup
and the instrument's own update); the gauges are a collector that reads the tracked pools from
the store when ``/metrics`` is scraped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .recorder import BUCKETS_S, COUNTERS, HISTOGRAMS, Labels, Recorder

__all__ = ["PrometheusRecorder"]

_LABELS = ("kind", "key", "task")


class _PoolCollector(Collector):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[GaugeMetricFamily]:
        occupancy = GaugeMetricFamily(
            "cachify_pool_occupancy",
            "Slots taken in the pool (store-wide, read on scrape)",
            labels=["key", "task"],
        )
        parked = GaugeMetricFamily(
            "cachify_waiting_room_parked",
            "Deliveries parked in the pool's waiting room (store-wide, read on scrape)",
            labels=["key", "task"],
        )
        oldest = GaugeMetricFamily(
            "cachify_waiting_room_oldest_wait_seconds",
            "How long the oldest parked delivery has waited (store-wide, read on scrape)",
            labels=["key", "task"],
        )
        for r in self.recorder.read_pools():
            occupancy.add_metric([r.key, r.task], r.occupancy)
            parked.add_metric([r.key, r.task], r.parked)
            oldest.add_metric([r.key, r.task], r.oldest_wait_s)
        yield occupancy
        yield parked
        yield oldest

    def describe(self) -> list[Any]:
        return []  # read on collect only: registering must not reach the store


class PrometheusRecorder(Recorder):
    def __init__(self, registry: CollectorRegistry, **bounds: int) -> None:
        super().__init__(**bounds)
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
        for collector in (
            *self._counters.values(),
            *self._histograms.values(),
            self._verdicts,
            self.collector,
        ):
            self.registry.unregister(collector)
