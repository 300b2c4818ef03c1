"""Rows 19-21 of the contract: the waiting room of a full pool, a rate limit's timed waits, and
a park whose reply the store lost, on every framework (see README.md here)."""

from __future__ import annotations

import time

import pytest
import redis

from cachify_core.backends.redis import ROOM_ACQUIRE

from .frameworks import Framework
from .helpers import hold_until, send_first
from .probe import Probe
from .store import Store
from .table import row

pytestmark = pytest.mark.timeout(60)


def _leftovers_within(store: Store, within_s: float) -> list[str]:
    """The store's leftovers once a rate limiter's state has run out (it expires at its TAT)."""
    deadline = time.monotonic() + within_s
    while True:
        left = store.leftovers()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@row("19")
def test_a_full_pool_parks_and_hands_over_in_order(framework: Framework, store: Store) -> None:
    probe = Probe()
    probe.block(0)
    task = framework.declare(probe.body(), pool_key="pool-19", pool_max_size=1, retries=0)
    framework.start(concurrency=3)
    sending, _ = send_first(framework, probe, task, 0)
    probe.wait_entered(1)
    handles = []
    for x in range(1, 6):  # one after the other: each parks before the next is sent
        handles.append(framework.send(task, x))
        deadline = time.monotonic() + 10
        while store.cachify.pool("pool-19", 1).waiting().parked < x:
            assert time.monotonic() < deadline, "not parked"
            time.sleep(0.01)
    probe.release(0)
    framework.drain()
    first = sending.finish()
    outcomes = [framework.outcome(h, 20) for h in [first, *handles]]
    assert [o.value for o in outcomes] == [f"value-{x}" for x in range(6)]
    assert {e.attempt for e in probe.entries} == {0}
    assert probe.xs == list(range(6))  # first in, first out
    assert store.cachify.pool("pool-19", 1).waiting().parked == 0
    assert store.leftovers() == []


@row("20")
def test_a_rate_limited_task_waits_for_its_time(framework: Framework, store: Store) -> None:
    probe = Probe()
    task = framework.declare(probe.body(), rate_key="rate-20", rate="4/s", retries=0)
    framework.start(concurrency=8)
    handles = [framework.send(task, x) for x in range(8)]
    outcomes = [framework.outcome(h, 20) for h in handles]
    assert sorted(o.value for o in outcomes) == sorted(f"value-{x}" for x in range(8))
    assert sorted(probe.xs) == list(range(8))
    assert {e.attempt for e in probe.entries} == {0}
    starts = sorted(e.at for e in probe.entries)
    # 4 at once (the burst), then one per 250 ms: the 8th no earlier than 1 s after the first
    # (less a little for clock granularity between the store and this process).
    assert starts[7] - starts[0] >= 0.95
    framework.drain()
    assert _leftovers_within(store, 3.0) == []


@row("21")
def test_a_park_whose_reply_was_lost_runs_once(framework: Framework, store: Store) -> None:
    """The store parks a delivery and the reply never reaches the worker (the proxy drops it):
    the worker defers the task through the broker, and the copy finds the entry that unanswered
    call parked instead of parking a second one. The task runs once, from its hand-over."""
    (host, port), *_ = store.nodes
    with redis.Redis(host=host, port=port) as server:
        server.script_load(ROOM_ACQUIRE.source)  # so the lost call is the script itself
    probe = Probe()
    pooled = store.cachify.pool("pool-21", 1)
    task = framework.declare(probe.body(), pool_key="pool-21", pool_max_size=1, retries=0)
    framework.start(concurrency=2)
    holder = hold_until(
        store.cachify, "pool-21", lambda: store.proxy.lost == 1 and pooled.waiting().parked == 1
    )
    store.proxy.lose_next_reply(ROOM_ACQUIRE.sha.encode())
    handle = framework.send(task, 1)
    holder.join(20)
    assert store.proxy.lost == 1, "the admission's reply was not lost"
    assert framework.outcome(handle, 20).value == "value-1"
    framework.drain()
    assert probe.xs == [1]  # once: the deferred copy was recognised, not parked again
    assert {e.attempt for e in probe.entries} == {0}
    deadline = time.monotonic() + 10
    while pooled.waiting().parked or store.leftovers():
        assert time.monotonic() < deadline, f"left: {store.leftovers()}"
        time.sleep(0.05)
