"""Rows 8-9 of the contract: ``pool_*`` on every framework (see README.md here)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from cachify_core import CachifyPoolFullError

from .frameworks import Framework
from .helpers import hold_until, pool_held, send_first
from .probe import Probe
from .store import Store
from .table import row

pytestmark = pytest.mark.timeout(60)

BACKOFF = (0.01, 0.05)
TASKS = 12
POOL_MAX = 2


@row("8")
def test_a_pool_caps_concurrency_and_runs_each_task_once(framework: Framework, store: Store) -> None:
    probe = Probe()
    task = framework.declare(
        probe.body(sleep_s=0.02), pool_key="pool-8", pool_max_size=POOL_MAX, pool_backoff=BACKOFF, retries=0
    )
    framework.start(concurrency=4)
    with ThreadPoolExecutor(4) as senders:  # eager runs at send: four senders make the crowd
        handles = list(senders.map(lambda x: framework.send(task, x), range(TASKS)))
    outcomes = [framework.outcome(h, 20) for h in handles]
    assert [o.value for o in outcomes] == [f"value-{x}" for x in range(TASKS)]
    assert sorted(probe.xs) == list(range(TASKS))  # each ran once
    assert 1 <= probe.peak <= POOL_MAX
    assert {e.attempt for e in probe.entries} == {0}  # requeues spent no retry (budget 0)
    framework.drain()
    assert store.leftovers() == []


@row("8-on-full", ["drop", "raise", "callable", "max_requeues"])
def test_pool_on_full(framework: Framework, store: Store, variant: str) -> None:
    probe = Probe()
    options: dict[str, object] = {"pool_key": "pool-8f", "pool_max_size": 1, "pool_backoff": BACKOFF}
    if variant == "max_requeues":
        # pool_max_requeues counts passes through the broker: the backoff path's (a parked
        # task waits in the room without passing; see the waiting-room rows).
        options["pool_max_requeues"] = 2
        options["pool_max_waiting"] = 0
    elif variant == "callable":
        options["pool_on_full"] = lambda x, **_: f"full-{x}"  # Taskiq passes its DI context too
    else:
        options["pool_on_full"] = variant
    if variant == "drop":
        options["once_key"] = "once-{x}"
    task = framework.declare(probe.body(), retries=0, **options)
    framework.start()
    with pool_held(store.cachify, "pool-8f"):
        handle = framework.send(task, 1)
        framework.drain()
        outcome = framework.outcome(handle, 0.5 if variant == "drop" else 10)
        if variant == "drop":
            assert outcome.kind == "none"
            again = framework.send(task, 1)  # the hold went with the dropped task
            assert framework.handle_id(again) != framework.handle_id(handle)
            framework.drain()
        elif variant == "callable":
            assert outcome.value == "full-1"
        else:
            assert (outcome.kind, outcome.error) == ("error", CachifyPoolFullError.__name__)
    assert probe.entries == []
    framework.drain()
    assert store.leftovers() == []


@row("9")
def test_pool_full_escaping_the_body_is_requeued(framework: Framework, store: Store) -> None:
    probe = Probe()
    inner = store.cachify
    task = framework.declare(
        probe.body(inside=lambda: inner.pool("pool-9-inner", max_size=1)),
        pool_key="pool-9",
        pool_max_size=4,
        pool_backoff=BACKOFF,
        retries=0,
    )
    framework.start()
    holder = hold_until(inner, "pool-9-inner", lambda: len(probe.entries) >= 2)
    sending, _ = send_first(framework, probe, task, 1)
    probe.wait_entered(2)  # found the inner pool full, came back, and entered again
    holder.join(10)
    framework.drain()
    handle = sending.finish()
    assert framework.outcome(handle, 10).value == "value-1"
    assert len(probe.completed) == 1
    assert {e.attempt for e in probe.entries} == {0}
