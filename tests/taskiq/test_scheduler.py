"""Scheduler kicks go through ``pre_send`` like ``kiq``: TaskiqScheduler sends with an
``AsyncKicker`` on the broker, so a scheduled run whose key is held is not sent."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from taskiq import InMemoryBroker, ScheduledTask, ScheduleSource, SmartRetryMiddleware, TaskiqScheduler
from taskiq.cli.scheduler.run import send
from taskiq.schedule_sources import LabelScheduleSource

from cachify_core import Cachify
from cachify_taskiq import CachifyDuplicateError

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


class ListSource(ScheduleSource):
    """Schedules kept in a list, as a stored source keeps what ``schedule_by_*`` gives it."""

    def __init__(self) -> None:
        self.schedules: list[ScheduledTask] = []

    async def get_schedules(self) -> list[ScheduledTask]:
        return list(self.schedules)

    async def add_schedule(self, schedule: ScheduledTask) -> None:
        self.schedules.append(schedule)


async def test_overrides_of_a_stored_schedule_keep_their_meaning(
    make_broker: Callable[..., InMemoryBroker],
) -> None:
    """``schedule_by_*`` stores the kicker's labels as text: ``once_key=None`` must still mean
    "no dedup" at the scheduler's kick (not a key template "None"), a number a number."""
    broker = make_broker()
    probe = Probe()
    probe.hold_first = True
    task = declare(broker, "async", probe, once_key="report-{i}")
    source = ListSource()
    scheduler = TaskiqScheduler(broker, [source])
    await broker.startup()
    await task.kicker().with_labels(once_key=None).schedule_by_interval(source, 60, 0)
    await task.kicker().with_labels(once_ttl=30, once_raise=True).schedule_by_interval(source, 60, 0)
    free, raising = await source.get_schedules()
    assert raising.labels["once_ttl"] == "30"  # what the scheduler will send: text

    await send(scheduler, source, free)
    await send(scheduler, source, free)  # no dedup: both run
    await eventually(lambda: _true(probe.now == 2), 5, "both scheduled runs started")
    holder = await task.kiq(0)  # the declared dedup took the key meanwhile
    with pytest.raises(CachifyDuplicateError) as caught:
        await send(scheduler, source, raising)
    assert caught.value.holder_id == holder.task_id
    probe.hold.set()
    await broker.wait_all()
    assert probe.runs == 3


async def test_a_retry_kicked_later_from_a_schedule_source_is_never_refused(
    make_broker: Callable[..., InMemoryBroker], cachify: Cachify, caplog: pytest.LogCaptureFixture
) -> None:
    """SmartRetryMiddleware with a schedule source stores the retry; the scheduler kicks it
    later, outside the failed delivery. It is still a retry: sent even though another task took
    the key meanwhile, and never raised as a duplicate (``once_raise=True``)."""
    source = ListSource()
    retries = SmartRetryMiddleware(default_retry_count=3, default_delay=0, schedule_source=source)
    broker = make_broker(middlewares=(retries,))
    probe = Probe(failures=1)
    probe.hold_first = True
    task = declare(broker, "async", probe, once_key="job", once_raise=True, retry_on_error=True)
    scheduler = TaskiqScheduler(broker, [source])
    await broker.startup()

    first = await task.kiq(1)  # fails; its retry goes to the schedule source
    await eventually(lambda: _true(len(source.schedules) == 1), 5, "the retry was scheduled")
    await broker.wait_all()
    holder = await task.kiq(0)  # another task holds the key now (its run waits)
    await eventually(lambda: _true(probe.now == 1), 5, "the holder started")
    [retry] = source.schedules
    caplog.set_level(logging.INFO, logger="cachify.tasks")
    await send(scheduler, source, retry)
    resent = [r.getMessage() for r in caplog.records if "re-sent while" in r.getMessage()]
    assert resent == [
        f"cachify: task {task.task_name}[{first.task_id}] re-sent while {cachify.prefix}job-once is "
        f"held by task {holder.task_id} (a retry or requeue is never dropped at send; it is checked "
        "again when it runs)"
    ]
    probe.hold.set()
    assert (await holder.wait_result(check_interval=0.01, timeout=5)).return_value == 0
