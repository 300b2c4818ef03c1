"""Rows 10, 12 (cache_ttl) and 18 of the contract: ``cache_*`` on every framework."""

from __future__ import annotations

import logging
import time

import pytest

from cachify_core import CachifyBackendError

from .frameworks import Framework
from .probe import Probe
from .store import Store
from .table import row

pytestmark = pytest.mark.timeout(60)


@row("10")
def test_a_hit_is_the_result_without_a_run_and_keeps_no_hold(framework: Framework, store: Store) -> None:
    probe = Probe()
    task = framework.declare(probe.body(fail_first=1), cache_key="cache-{x}", once_key="once-{x}")
    framework.start()
    failed = framework.send(task, 1)
    framework.drain()
    assert framework.outcome(failed).kind == "error"  # a failure is not cached...
    first = framework.send(task, 1)
    framework.drain()
    assert framework.outcome(first).value == "value-1"  # ...so this one ran
    hit = framework.send(task, 1)
    framework.drain()
    assert framework.outcome(hit).value == "value-1"
    assert framework.handle_id(hit) != framework.handle_id(first)
    assert len(probe.entries) == 2  # the hit did not run the body
    assert store.leftovers() == []  # and took (or kept) no once hold
    assert any("cache-" in k for k in store.keys())  # noqa: SIM118 (the store's keys, not a dict)


@row("12-effect")
def test_a_cache_ttl_override_applies(framework: Framework, store: Store) -> None:
    probe = Probe()
    task = framework.declare(probe.body(), cache_key="cache-{x}", cache_ttl=60)
    framework.start()
    framework.send(task, 1, cache_ttl=0.2)
    framework.drain()
    framework.send(task, 1)
    framework.drain()
    assert len(probe.entries) == 1  # a hit
    time.sleep(0.3)  # past the overriding TTL (no event to wait for: it is an expiry)
    framework.send(task, 1)
    framework.drain()
    assert len(probe.entries) == 2  # expired after 0.2 s, not 60 s


@row("18", ["call", "raise"])
def test_cache_key_with_the_store_down(
    framework: Framework, store: Store, variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cachify")
    probe = Probe()
    options: dict[str, object] = {"cache_key": "cache-{x}"}
    if variant == "raise":
        # "raise" makes the lookup's error the delivery's store error, which on_store_error
        # then decides (its default, "defer", would send it back until the store answers)
        options["cache_on_backend_error"] = "raise"
        options["on_store_error"] = "fail"
    task = framework.declare(probe.body(), **options)
    framework.start()
    handle = framework.send(task, 1)
    framework.drain()
    outcome = framework.outcome(handle)
    if variant == "call":
        assert outcome.value == "value-1"  # fails open, as @cached does
        assert len(probe.entries) == 1
        warned = [r for r in caplog.records if r.name.startswith("cachify")]
        assert len(warned) == 1, [r.getMessage() for r in warned]
    else:
        assert (outcome.kind, outcome.error) == ("error", CachifyBackendError.__name__)
        assert probe.entries == []
