"""The bookkeeping every metrics adapter shares (no third-party import): hold timers keyed by
owner token, lost holds counted once, the bounded set of pools read on scrape, park times of
this process's waiting-room entries. An adapter subclasses :class:`Recorder` and implements
:meth:`Recorder._inc` and :meth:`Recorder._observe` on its library's instruments.

Metric names (Prometheus spelling; OTel drops the ``_total`` suffix and uses the same names):

========================================  ========================================================
``cachify_acquired_total``                holds taken (lock, once, pool slot; task holds and slots
                                          at admission)
``cachify_denied_total``                  acquisitions refused: lock held, pool full, ``@once``
                                          overlap (after any wait)
``cachify_released_total``                holds released by their holder while still theirs
``cachify_expired_total``                 holds this process took that were gone before their
                                          holder released them (TTL ran out, or force-released):
                                          seen by a lease renewal or by the release, once per hold
``cachify_duplicate_at_send_total``       task sends refused: the ``once_key`` is held
``cachify_duplicate_at_run_total``        deliveries skipped at admission: the hold is another
                                          task's, or the copy's hand-over already started
``cachify_requeued_total``                deliveries sent back through the broker (pool full)
``cachify_parked_total``                  deliveries parked in a waiting room
``cachify_handed_over_total``             hand-overs published by this process
``cachify_rate_limited_total``            calls a rate limit refused (after any wait)
``cachify_cache_hit_total`` / ``_miss``   ``@cached`` / task cache lookups that served a value /
                                          found none (so the function or task body ran)
``cachify_cache_error_total``             cache reads or writes the store failed
``cachify_task_verdicts_total``           task admissions by verdict (labels ``task``, ``verdict``)
``cachify_lock_wait_seconds``             time blocked waiting in ``lock(nowait=False)``,
                                          ``pool(timeout=...)`` and their decorators
``cachify_hold_seconds``                  acquisition to release of a hold this process took
``cachify_waiting_room_wait_seconds``     park to admission of the handed-over copy, when both
                                          happened in this process (see docs/METRICS.md)
``cachify_pool_occupancy``                gauge, read from the store on scrape
``cachify_waiting_room_parked``           gauge, read from the store on scrape
``cachify_waiting_room_oldest_wait_seconds``  gauge, read from the store on scrape
========================================  ========================================================
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import events

if TYPE_CHECKING:
    from ..instance import Cachify

__all__ = ["COUNTERS", "HISTOGRAMS", "PoolReading", "Recorder"]

#: Counter events with the labels (kind, key, task).
COUNTERS = (
    "acquired",
    "denied",
    "released",
    "expired",
    "duplicate_at_send",
    "duplicate_at_run",
    "requeued",
    "parked",
    "handed_over",
    "rate_limited",
    "cache_hit",
    "cache_miss",
    "cache_error",
)
#: Histograms with the labels (kind, key, task), in seconds.
HISTOGRAMS = ("lock_wait", "hold", "waiting_room_wait")
#: Buckets (seconds) of every histogram: from a Redis round trip to a long task.
BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0)

Labels = tuple[str, str, str]


@dataclass(frozen=True)
class PoolReading:
    """One pool template's state in the store, summed over the rendered pools seen here."""

    key: str
    task: str
    occupancy: int
    parked: int
    oldest_wait_s: float


class _Hold:
    __slots__ = ("labels", "lost", "started")

    def __init__(self, labels: Labels, started: float) -> None:
        self.labels = labels
        self.started = started
        self.lost = False


class Recorder:
    """An :class:`~.events.Sink` that keeps the books and leaves the instruments to a subclass.

    ``max_tracked_pools``: how many rendered pools (least recently used dropped first) the
    gauges read on each scrape, at 2 round trips each. ``max_open_holds`` / ``max_parked``
    bound the timers of holds and parked entries that never come back to this process.
    """

    def __init__(
        self, max_tracked_pools: int = 64, max_open_holds: int = 100_000, max_parked: int = 10_000
    ) -> None:
        for name, value in (
            ("max_tracked_pools", max_tracked_pools),
            ("max_open_holds", max_open_holds),
            ("max_parked", max_parked),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"metrics: {name} must be an int >= 0, got {value!r}")
        self.max_tracked_pools = max_tracked_pools
        self.max_open_holds = max_open_holds
        self.max_parked = max_parked
        self._holds: dict[tuple[bool, str], _Hold] = {}
        self._pools: OrderedDict[tuple[int, str], tuple[Cachify, str, str, str]] = OrderedDict()
        self._parked: dict[str, float] = {}
        self._mutex = threading.Lock()  # the pools' LRU order only; the dicts' single ops are atomic

    # -- what an adapter implements --------------------------------------------------------------
    def _inc(self, event: str, labels: Labels, n: int) -> None:
        raise NotImplementedError

    def _observe(self, histogram: str, labels: Labels, seconds: float) -> None:
        raise NotImplementedError

    def _verdict(self, task: str, verdict: str) -> None:
        raise NotImplementedError

    # -- the sink --------------------------------------------------------------------------------
    def count(self, event: str, kind: str, key: str, task: str, n: int = 1) -> None:
        self._inc(event, (kind, key, task), n)

    def acquired(
        self, kind: str, key: str, task: str, token: str, cachify: Cachify | None = None, full_key: str = ""
    ) -> None:
        labels = (kind, key, task)
        self._inc("acquired", labels, 1)
        holds = self._holds
        if len(holds) >= self.max_open_holds:
            holds.clear()  # holds that never came back (killed before release): start over
        holds[(kind == "pool", token)] = _Hold(labels, events.now())
        if cachify is not None:
            self._track(cachify, full_key, key, task)

    def released(self, kind: str, key: str, task: str, token: str, ok: bool) -> None:
        hold = self._holds.pop((kind == "pool", token), None)
        if ok:
            self._inc("released", (kind, key, task), 1)
            if hold is not None:
                self._observe("hold", hold.labels, events.now() - hold.started)
        elif hold is None or not hold.lost:
            self._inc("expired", (kind, key, task), 1)

    def lost(self, kind: str, token: str) -> None:
        hold = self._holds.get((kind == "pool", token))
        if hold is None:  # taken before metrics were on, or a @cached fill lock: no labels known
            self._inc("expired", (kind, "", ""), 1)
        elif not hold.lost:
            hold.lost = True
            self._inc("expired", hold.labels, 1)

    def waited(self, kind: str, key: str, task: str, seconds: float) -> None:
        self._observe("lock_wait", (kind, key, task), seconds)

    def verdict(self, task: str, verdict: str) -> None:
        self._verdict(task, verdict)

    def room_parked(self, key: str, task: str, entry_id: str, cachify: Cachify, full_key: str) -> None:
        self._inc("parked", ("pool", key, task), 1)
        parked = self._parked
        if len(parked) >= self.max_parked:
            parked.clear()
        parked[entry_id] = events.now()
        self._track(cachify, full_key, key, task)

    def room_claimed(self, key: str, task: str, entry_id: str) -> None:
        started = self._parked.pop(entry_id, None)
        if started is not None:
            self._observe("waiting_room_wait", ("pool", key, task), events.now() - started)

    # -- gauges ----------------------------------------------------------------------------------
    def _track(self, cachify: Cachify, full_key: str, key: str, task: str) -> None:
        if self.max_tracked_pools == 0:
            return
        where = (id(cachify), full_key)
        pools = self._pools
        if where in pools:
            return  # no reordering on the hot path: eviction is by first sight, not last use
        with self._mutex:
            pools[where] = (cachify, full_key, key, task)
            while len(pools) > self.max_tracked_pools:
                pools.popitem(last=False)

    def read_pools(self) -> list[PoolReading]:
        """Occupancy and waiting room of every tracked pool, summed per (template, task): 2
        round trips per tracked pool (``pool_size``, ``room_stats``). A pool whose store does
        not answer is left out of this reading."""
        with self._mutex:
            tracked = list(self._pools.values())
        sums: dict[tuple[str, str], list[float]] = {}
        for cachify, full_key, key, task in tracked:
            try:
                backend = cachify.sync_backend
                size = backend.pool_size(full_key)
                stats = backend.room_stats(full_key)
            except Exception:
                continue
            row = sums.setdefault((key, task), [0, 0, 0.0])
            row[0] += size
            row[1] += stats.parked
            row[2] = max(row[2], stats.oldest_wait_s)
        return [PoolReading(k, t, int(r[0]), int(r[1]), r[2]) for (k, t), r in sums.items()]


class Tee:
    """Several sinks at once (Prometheus and OpenTelemetry both enabled)."""

    def __init__(self, sinks: list[Recorder]) -> None:
        self.sinks = sinks

    def count(self, event: str, kind: str, key: str, task: str, n: int = 1) -> None:
        for s in self.sinks:
            s.count(event, kind, key, task, n)

    def acquired(
        self, kind: str, key: str, task: str, token: str, cachify: Cachify | None = None, full_key: str = ""
    ) -> None:
        for s in self.sinks:
            s.acquired(kind, key, task, token, cachify, full_key)

    def released(self, kind: str, key: str, task: str, token: str, ok: bool) -> None:
        for s in self.sinks:
            s.released(kind, key, task, token, ok)

    def lost(self, kind: str, token: str) -> None:
        for s in self.sinks:
            s.lost(kind, token)

    def waited(self, kind: str, key: str, task: str, seconds: float) -> None:
        for s in self.sinks:
            s.waited(kind, key, task, seconds)

    def verdict(self, task: str, verdict: str) -> None:
        for s in self.sinks:
            s.verdict(task, verdict)

    def room_parked(self, key: str, task: str, entry_id: str, cachify: Cachify, full_key: str) -> None:
        for s in self.sinks:
            s.room_parked(key, task, entry_id, cachify, full_key)

    def room_claimed(self, key: str, task: str, entry_id: str) -> None:
        for s in self.sinks:
            s.room_claimed(key, task, entry_id)
