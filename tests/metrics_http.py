"""Reading a worker's /metrics over HTTP, for the frameworks' test_metrics_worker.py files.

:func:`scrape` fetches and parses the exposition text (bounded retries while the worker's
server comes up); :func:`wait_for` scrapes until a condition holds (bounded in time);
:func:`expected_work` is the known work every framework's metrics app does, as the counters
must show it.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

#: Seconds a scrape may take to get an answer (the server starts with the worker).
SCRAPE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Samples:
    """One scrape: every sample as (name, labels) -> value."""

    values: dict[tuple[str, frozenset[tuple[str, str]]], float]
    text: str

    def get(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0.0: none)."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.values.items() if n == name and want <= ls)

    def has(self, name: str, **labels: str) -> bool:
        want = set(labels.items())
        return any(n == name and want <= ls for n, ls in self.values)

    def names(self) -> set[str]:
        return {n for n, _ in self.values}


def parse(text: str) -> Samples:
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Samples(values, text)


def scrape(port: int, timeout_s: float = SCRAPE_TIMEOUT_S) -> Samples:
    """GET http://127.0.0.1:``port``/metrics and parse it; retries (every 0.1 s, at most
    ``timeout_s``) while nothing listens yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return parse(response.read().decode())
        except (urllib.error.URLError, ConnectionError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"no /metrics on port {port} within {timeout_s}s: {exc}") from exc
            time.sleep(0.1)


def wait_for(port: int, done: Callable[[Samples], bool], timeout_s: float, what: str) -> Samples:
    """Scrape every 0.1 s until ``done(samples)``; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(port)
        if done(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}; last scrape:\n{samples.text[-3000:]}")
        time.sleep(0.1)


def verdicts(samples: Samples, task: str, verdict: str) -> float:
    return samples.get("cachify_task_verdicts_total", task=task, verdict=verdict)


def expected_work(once_task: str, pool_task: str, cache_task: str) -> dict[tuple[str, str, str, str], float]:
    """The counters (``name``, ``kind``, ``key``, ``task``) -> value after the metrics apps'
    known work: ``once_job`` 6 sends of which 2 are run-time duplicates of a running one (4
    runs); ``pool_job`` 4 deliveries of a pool of 1 (the first runs, 3 park and are handed
    over one by one); ``square`` 1 miss and 2 hits."""
    once, pool, cache = (
        ("once", "m-once-{n}", once_task),
        ("pool", "m-pool", pool_task),
        (
            "cache",
            "m-square-{n}",
            cache_task,
        ),
    )
    return {
        ("cachify_acquired_total", *once): 4,
        ("cachify_released_total", *once): 4,
        ("cachify_duplicate_at_run_total", *once): 2,
        ("cachify_acquired_total", *pool): 4,
        ("cachify_released_total", *pool): 4,
        ("cachify_parked_total", *pool): 3,
        ("cachify_handed_over_total", *pool): 3,
        ("cachify_duplicate_at_run_total", *pool): 0,
        ("cachify_requeued_total", *pool): 0,
        ("cachify_cache_miss_total", *cache): 1,
        ("cachify_cache_hit_total", *cache): 2,
        ("cachify_expired_total", *once): 0,
        ("cachify_expired_total", *pool): 0,
    }


def check_work(samples: Samples, once_task: str, pool_task: str, cache_task: str) -> None:
    """Every counter of :func:`expected_work` equals the work done; so do the verdicts and the
    hold histogram's counts."""
    got = {
        k: samples.get(k[0], kind=k[1], key=k[2], task=k[3])
        for k in expected_work(once_task, pool_task, cache_task)
    }
    assert got == expected_work(once_task, pool_task, cache_task)
    assert {v: verdicts(samples, once_task, v) for v in ("run", "skip")} == {"run": 4, "skip": 2}
    assert {v: verdicts(samples, pool_task, v) for v in ("run", "parked")} == {"run": 4, "parked": 3}
    assert {v: verdicts(samples, cache_task, v) for v in ("run", "cached")} == {"run": 1, "cached": 2}
    for kind, key, task in (("once", "m-once-{n}", once_task), ("pool", "m-pool", pool_task)):
        assert samples.get("cachify_hold_seconds_count", kind=kind, key=key, task=task) == 4


#: How long a worker's pool gauges may take to show: one refresh (``gauge_refresh_s``, 10 s by
#: default) in multiprocess mode, plus slack.
GAUGE_WAIT_S = 15.0


def check_gauges(port: int, pool_task: str) -> None:
    """The pool's gauges are exposed (multiprocess mode: written by the refresh thread) and
    read the store's state after the work: nothing held, nothing parked."""
    samples = wait_for(
        port,
        lambda s: s.has("cachify_pool_occupancy", key="m-pool", task=pool_task),
        GAUGE_WAIT_S,
        "the pool gauges",
    )
    labels = {"key": "m-pool", "task": pool_task}
    assert samples.get("cachify_pool_occupancy", **labels) == 0
    assert samples.get("cachify_waiting_room_parked", **labels) == 0
    assert samples.has("cachify_waiting_room_oldest_wait_seconds", **labels)
