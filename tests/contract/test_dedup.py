"""Rows 1-7, 11-13 of the contract: ``once_*`` on every framework (see README.md here)."""

from __future__ import annotations

import logging

import pytest

from cachify_core.tasks import CachifyDuplicateError, CachifyTaskOptionError

from .frameworks import Framework
from .helpers import pool_held, send_first
from .probe import Probe
from .store import Store
from .table import row

pytestmark = pytest.mark.timeout(60)


@row("1")
def test_a_duplicate_returns_the_holders_handle(framework: Framework, store: Store) -> None:
    probe = Probe()
    probe.block(1)
    task = framework.declare(probe.body(), once_key="once-{x}")
    sending, holder = send_first(framework, probe, task, 1)
    duplicates = [framework.send(task, 1) for _ in range(5)]
    assert [framework.handle_id(d) for d in duplicates] == [holder] * 5
    probe.release()
    framework.drain()
    sending.finish()
    assert [e.task_id for e in probe.entries] == [holder]  # the body ran once, as the holder
    assert framework.deliveries(task) == 1  # the duplicates were never enqueued
    assert framework.outcome(duplicates[-1]).value == "value-1"  # the holder's result, through it
    assert store.leftovers() == []


@row("2")
def test_once_raise_raises_with_the_holders_id(framework: Framework, store: Store) -> None:
    probe = Probe()
    probe.block(1)
    task = framework.declare(probe.body(), once_key="once-{x}", once_raise=True)
    sending, holder = send_first(framework, probe, task, 1)
    with pytest.raises(CachifyDuplicateError) as info:
        framework.send(task, 1)
    assert info.value.holder_id == holder
    probe.release()
    framework.drain()
    sending.finish()
    assert len(probe.entries) == 1
    assert framework.deliveries(task) == 1


@row("3", ["success", "failure", "skip"])
def test_the_hold_ends_with_the_run(framework: Framework, store: Store, variant: str) -> None:
    probe = Probe()
    options: dict[str, object] = {"once_key": "once-{x}"}
    if variant == "skip":
        options.update(pool_key="pool-3", pool_max_size=1, pool_on_full="drop")
    task = framework.declare(probe.body(fail_first=1 if variant == "failure" else 0), **options)
    framework.start()
    if variant == "skip":
        with pool_held(store.cachify, "pool-3"):
            first = framework.send(task, 1)
            framework.drain()
            assert framework.outcome(first, 0.2).kind == "none"
            assert probe.entries == []
    else:
        first = framework.send(task, 1)
        framework.drain()
        assert framework.outcome(first).kind == ("error" if variant == "failure" else "value")
    again = framework.send(task, 1)  # the key is free again
    assert framework.handle_id(again) != framework.handle_id(first)
    framework.drain()
    assert framework.outcome(again).value == "value-1"
    assert store.leftovers() == []


@row("4")
def test_until_started_allows_one_queued_and_one_running(framework: Framework, store: Store) -> None:
    probe = Probe()
    probe.block(1)
    task = framework.declare(probe.body(), once_key="once-4", once_mode="until_started")
    framework.start(concurrency=1)
    first = framework.send(task, 1)
    probe.wait_entered(1)  # running: the hold went with the start
    second = framework.send(task, 2)
    third = framework.send(task, 3)
    assert framework.handle_id(second) != framework.handle_id(first)
    assert framework.handle_id(third) == framework.handle_id(second)
    probe.release()
    framework.drain()
    assert probe.xs == [1, 2]
    assert store.leftovers() == []


@row("5")
def test_running_mode_skips_a_concurrent_delivery(
    framework: Framework, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cachify")
    probe = Probe()
    probe.block(1)
    task = framework.declare(probe.body(), once_key="once-5", once_mode="running")
    framework.start(concurrency=2)
    sending, holder = send_first(framework, probe, task, 1)
    probe.wait_entered(1)
    assert store.leftovers() != []  # held while it runs
    duplicate = framework.send(task, 2)  # sent: mode "running" claims nothing at send
    assert framework.handle_id(duplicate) != holder
    # wait until the worker has seen it, while the holder still runs
    deadline_ok = _wait_deliveries(framework, task, 2)
    probe.release()
    framework.drain()
    sending.finish()
    assert deadline_ok
    assert probe.xs == [1]
    assert framework.outcome(duplicate, 0.2).kind == "none"
    name = framework.task_name(task)
    logged = [r for r in caplog.records if r.levelno == logging.INFO and r.name.startswith("cachify")]
    assert any(name in r.getMessage() and "once-5" in r.getMessage() for r in logged), [
        r.getMessage() for r in logged
    ]
    assert store.leftovers() == []


def _wait_deliveries(framework: Framework, task: object, count: int) -> bool:
    import time

    deadline = time.monotonic() + 10
    while framework.deliveries(task) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@row("6")
def test_a_retry_is_the_holder(framework: Framework, store: Store) -> None:
    probe = Probe()
    task = framework.declare(probe.body(retry_first=1), once_key="once-{x}", retries=2)
    first = framework.send(task, 1)
    framework.drain()
    assert framework.outcome(first).value == "value-1"
    runs = probe.runs_of(1)
    assert [(e.task_id, e.attempt) for e in runs] == [
        (framework.handle_id(first), 0),
        (framework.handle_id(first), 1),
    ]
    assert store.leftovers() == []  # the final success released the hold
    again = framework.send(task, 1)
    assert framework.handle_id(again) != framework.handle_id(first)
    framework.drain()
    assert [(e.task_id, e.attempt) for e in probe.runs_of(1)[2:]] == [
        (framework.handle_id(again), 0),
        (framework.handle_id(again), 1),
    ]


@row("7")
def test_a_failed_publish_releases_the_hold(framework: Framework, store: Store) -> None:
    probe = Probe()
    task = framework.declare(probe.body(), once_key="once-{x}")
    with framework.failing_publish(), pytest.raises(Exception) as info:
        framework.send(task, 1)
    assert "broker down" in repr(info.value) + repr(info.value.__cause__) + repr(info.value.__context__)
    assert store.leftovers() == []
    handle = framework.send(task, 1)  # not a duplicate of the send that failed
    framework.drain()
    assert framework.outcome(handle).value == "value-1"


@row("11")
def test_once_key_none_turns_dedup_off_for_one_message(framework: Framework, store: Store) -> None:
    probe = Probe()
    probe.block(1)
    task = framework.declare(probe.body(), once_key="once-{x}")
    sending, holder = send_first(framework, probe, task, 1)
    probe.release()  # eager: the unheld send below runs at once
    free = framework.send(task, 1, once_key=None)
    assert framework.handle_id(free) != holder
    framework.drain()
    sending.finish()
    assert len(probe.runs_of(1)) == 2
    assert framework.outcome(free).value == "value-1"


@row("12-invalid", ["once_kye", "once_ttl", "once_mode"])
def test_bad_overrides_fail_at_send(framework: Framework, store: Store, variant: str) -> None:
    probe = Probe()
    task = framework.declare(probe.body(), once_key="once-{x}")
    override = {"once_kye": "x", "once_ttl": -5, "once_mode": "bogus"}[variant]
    with pytest.raises(CachifyTaskOptionError) as info:
        framework.send(task, 1, **{variant: override})
    message = str(info.value)
    assert framework.task_name(task) in message
    assert variant in message
    framework.drain()
    assert framework.deliveries(task) == 0  # nothing was sent
    assert probe.entries == []
    assert store.leftovers() == []


@row("12-effect")
def test_a_once_raise_override_makes_a_duplicate_raise(framework: Framework, store: Store) -> None:
    probe = Probe()
    probe.block(1)
    task = framework.declare(probe.body(), once_key="once-{x}")
    sending, holder = send_first(framework, probe, task, 1)
    with pytest.raises(CachifyDuplicateError) as info:
        framework.send(task, 1, once_raise=True)
    assert info.value.holder_id == holder
    probe.release()
    framework.drain()
    sending.finish()
    assert len(probe.entries) == 1


@row("13")
def test_a_retry_is_sent_even_when_its_hold_was_lost(framework: Framework, store: Store) -> None:
    """Expected: the retry is sent; at run time it is admitted like any delivery (here the key
    is held by the other task, so it is skipped then — or runs, if that one finished)."""
    probe = Probe()
    other: list[object] = []

    def take_the_key_away(ctx: object) -> None:
        store.delete_matching("once-13")  # the hold is gone (expired, or forced by an operator)
        other.append(framework.send(task, 2))  # another task id takes the key

    task = framework.declare(
        probe.body(retry_first=1, retry_only=1, before_retry=take_the_key_away), once_key="once-13", retries=2
    )
    framework.start(concurrency=1)  # the other task waits in the queue while the first runs
    first = framework.send(task, 1)
    framework.drain()
    assert other, "the first run never asked for its retry"
    assert framework.handle_id(other[0]) != framework.handle_id(first)
    first_runs = [e.attempt for e in probe.runs_of(1)]
    # first run + its retry + the other task, all delivered: the retry was not dropped at send
    assert framework.deliveries(task) == 3, (first_runs, probe.entries)
