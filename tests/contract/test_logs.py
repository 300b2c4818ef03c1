"""Row 17 of the contract: one log vocabulary on logger ``cachify.tasks``, each line naming
the task, its id and its key."""

from __future__ import annotations

import logging
import time

import pytest

from ..support import started
from .frameworks import Framework
from .helpers import pool_held, send_first
from .probe import Probe
from .store import Store
from .table import LOG_EVENTS, row

pytestmark = pytest.mark.timeout(60)

LOGGER = "cachify.tasks"


def lines(caplog: pytest.LogCaptureFixture, level: int, word: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == level and word in r.getMessage()
    ]


@row("17", LOG_EVENTS)
def test_one_log_vocabulary(
    framework: Framework, store: Store, variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cachify")
    probe = Probe()
    if variant == "not-sent":  # INFO at send: a duplicate was not sent
        probe.block(1)
        task = framework.declare(probe.body(), once_key="once-{x}")
        sending, holder = send_first(framework, probe, task, 1)
        framework.send(task, 1)
        probe.release()
        framework.drain()
        sending.finish()
        level, word, task_id, key = logging.INFO, "not sent", holder, "once-1"
    elif variant == "skipped":  # INFO at run time: a delivery skipped, its key held by another
        probe.block(1)
        task = framework.declare(probe.body(), once_key="once-17", once_mode="running")
        framework.start(concurrency=2)
        sending, _ = send_first(framework, probe, task, 1)
        probe.wait_entered(1)
        duplicate = framework.send(task, 2)
        probe.wait_for(lambda p: framework.deliveries(task) >= 2, "the duplicate delivered")
        probe.release()
        framework.drain()
        sending.finish()
        level, word, task_id, key = logging.INFO, "skipped", framework.handle_id(duplicate), "once-17"
    elif variant == "requeued":  # INFO: a requeue, with its delay (the fallback: nothing parks)
        task = framework.declare(
            probe.body(), pool_key="pool-17", pool_max_size=1, pool_backoff=(0.01, 0.02), pool_max_waiting=0
        )
        framework.start()
        with pool_held(store.cachify, "pool-17"):
            sending = started(lambda: framework.send(task, 1))  # eager: requeues inline, in there
            deadline = time.monotonic() + 1.5
            while framework.deliveries(task) < 2 and not any(
                "requeue" in r.getMessage() for r in caplog.records
            ):
                assert time.monotonic() < deadline, "never requeued"
                time.sleep(0.01)
        handle = sending.finish()
        framework.outcome(handle)  # its last run is over: no requeue left pending
        framework.drain()
        level, word, task_id, key = logging.INFO, "requeued", framework.handle_id(handle), "pool-17"
    else:  # DEBUG: a cache hit
        task = framework.declare(probe.body(), cache_key="cache-{x}")
        framework.start()
        framework.send(task, 1)
        framework.drain()
        hit = framework.send(task, 1)
        framework.drain()
        level, word, task_id, key = logging.DEBUG, "cache hit", framework.handle_id(hit), "cache-1"
    found = lines(caplog, level, word)
    assert found, [f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records]
    name = framework.task_name(task)
    assert any(name in m and task_id in m and key in m for m in found), found
    if variant == "requeued":
        assert any(" in " in m and "s" in m.split(" in ", 1)[1] for m in found), found  # "... in 0.01s"
