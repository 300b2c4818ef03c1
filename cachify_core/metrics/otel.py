"""The OpenTelemetry adapter (extra ``otel``: ``opentelemetry-api``; an SDK, exporter or reader
is the application's choice). Counters and histograms are updated as events happen, with the
attributes ``kind``, ``key``, ``task``; the gauges are observable gauges whose callback reads the
tracked pools from the store when the reader collects."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from .recorder import COUNTERS, HISTOGRAMS, Labels, Recorder

__all__ = ["OtelRecorder"]


class OtelRecorder(Recorder):
    def __init__(self, meter_provider: MeterProvider | None = None, **bounds: int) -> None:
        super().__init__(**bounds)
        provider = meter_provider or metrics.get_meter_provider()
        meter: Meter = provider.get_meter("cachify")
        self.meter = meter
        self._counters = {name: meter.create_counter(f"cachify_{name}", unit="1") for name in COUNTERS}
        self._histograms = {
            name: meter.create_histogram(f"cachify_{name}_seconds", unit="s") for name in HISTOGRAMS
        }
        self._verdicts = meter.create_counter("cachify_task_verdicts", unit="1")
        self._attributes: dict[Labels, dict[str, str]] = {}
        meter.create_observable_gauge("cachify_pool_occupancy", [self._occupancy], unit="1")
        meter.create_observable_gauge("cachify_waiting_room_parked", [self._parked_now], unit="1")
        meter.create_observable_gauge("cachify_waiting_room_oldest_wait_seconds", [self._oldest], unit="s")

    def _attrs(self, labels: Labels) -> dict[str, str]:
        attrs = self._attributes.get(labels)
        if attrs is None:
            attrs = self._attributes[labels] = {"kind": labels[0], "key": labels[1], "task": labels[2]}
        return attrs

    def _inc(self, event: str, labels: Labels, n: int) -> None:
        self._counters[event].add(n, self._attrs(labels))

    def _observe(self, histogram: str, labels: Labels, seconds: float) -> None:
        self._histograms[histogram].record(seconds, self._attrs(labels))

    def _verdict(self, task: str, verdict: str) -> None:
        self._verdicts.add(1, {"task": task, "verdict": verdict})

    def _readings(self, field: str) -> Iterable[Observation]:
        for r in self.read_pools():
            value: Any = getattr(r, field)
            yield Observation(value, {"key": r.key, "task": r.task})

    def _occupancy(self, _options: CallbackOptions) -> Iterable[Observation]:
        return list(self._readings("occupancy"))

    def _parked_now(self, _options: CallbackOptions) -> Iterable[Observation]:
        return list(self._readings("parked"))

    def _oldest(self, _options: CallbackOptions) -> Iterable[Observation]:
        return list(self._readings("oldest_wait_s"))
