"""Scheduler kicks go through ``pre_send`` like ``kiq``: TaskiqScheduler sends with an
``AsyncKicker`` on the broker, so a scheduled run whose key is held is not sent."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from taskiq import InMemoryBroker, TaskiqScheduler
from taskiq.cli.scheduler.run import send
from taskiq.schedule_sources import LabelScheduleSource

from .conftest import eventually
from .probes import Probe, declare

pytestmark = pytest.mark.timeout(30)


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_scheduled_kick_is_deduplicated(
    make_broker: Callable[..., InMemoryBroker], kind: str
) -> None:
    broker = make_broker()
    probe = Probe()
    probe.hold_first = True
    declare(broker, kind, probe, once_key="report-{i}", schedule=[{"cron": "* * * * *", "args": [0]}])
    source = LabelScheduleSource(broker)
    scheduler = TaskiqScheduler(broker, [source])
    await broker.startup()
    await source.startup()
    [scheduled] = await source.get_schedules()

    await send(scheduler, source, scheduled)  # the scheduler's own send, one tick
    await eventually(lambda: _true(probe.now == 1), 5, "the scheduled run started")
    await send(scheduler, source, scheduled)  # the next tick while the first holds the key
    await send(scheduler, source, scheduled)
    probe.hold.set()
    await broker.wait_all()
    assert probe.runs == 1

    await send(scheduler, source, scheduled)  # the hold ended with the run
    await eventually(lambda: _true(probe.runs == 2), 5, "the next tick ran")
    await broker.wait_all()
    assert probe.ran == [0, 0]
