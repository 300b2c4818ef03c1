"""``rate_key`` + ``rate`` on real ``taskiq worker`` processes (2) over RedisStreamBroker
(:mod:`tests.taskiq.rate_app`): 40 tasks kicked at once at 10/s each run once, spend no retry,
start no more often than the limit admits (in any 1 s window at most 10 + 10 - 1), and take
at least the time the limit needs. Observed from outside through Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from types import ModuleType

import pytest
import redis.asyncio as aredis

from ..windows import certain_peak
from .conftest import Workers, eventually, flush, running_workers, sending_side

pytestmark = pytest.mark.timeout(90)

APP_MODULE = "tests.taskiq.rate_app"
TASKS = 40
#: Clock granularity between the store and the workers' clocks (all on this machine).
MARGIN_S = 0.2


@pytest.fixture(scope="module")
def rate_workers(redis_base_url: str) -> Iterator[Workers]:
    with running_workers(redis_base_url, APP_MODULE) as handle:
        yield handle


@pytest.fixture
async def rate_app(
    redis_base_url: str, rate_workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ModuleType]:
    module = await sending_side(redis_base_url, APP_MODULE, monkeypatch)
    try:
        yield module
    finally:
        await module.broker.shutdown()
        flush(redis_base_url, 0, 2)


async def test_40_tasks_at_10_per_second_run_once_within_the_limit(rate_app: ModuleType) -> None:
    run, rate = uuid.uuid4().hex[:8], rate_app.RATE
    obs = aredis.Redis.from_url(rate_app.db_url(0))
    key = f"obs:rate:{run}:starts"
    try:
        for i in range(TASKS):
            await rate_app.rated_task.kiq(run, i)

        async def all_started() -> bool:
            return int(await obs.llen(key)) >= TASKS

        await eventually(all_started, 25, f"{TASKS} starts")
        await asyncio.sleep(0.5)  # a duplicate would start within this
        starts = [v.decode().split() for v in await obs.lrange(key, 0, -1)]
    finally:
        await obs.aclose()
    assert sorted(int(i) for i, _, _ in starts) == list(range(TASKS))  # each once, none lost
    assert {int(r) for _, _, r in starts} == {0}  # no retry spent
    times = sorted(float(t) for _, t, _ in starts)
    # GCRA admits at most count + burst - 1 in any 1 s; these are the bodies' starts, and one
    # start may lag its admission by a delivery delay that varies: count + burst (as in
    # benchmarks/rate_accuracy.py)
    assert certain_peak([(t, t) for t in times], 1.0) <= 2 * rate, times
    assert times[-1] - times[0] >= (TASKS - rate) / rate - MARGIN_S, times
