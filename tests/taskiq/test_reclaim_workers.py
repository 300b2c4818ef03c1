"""A SIGKILLed ``taskiq worker``'s delivery on RedisStreamBroker comes back without any new
message: the other worker reclaims it once it has been idle ``idle_timeout`` (2 s here), runs it,
and the task's dedup hold ends with that run (:mod:`tests.taskiq.reclaim_app`).
"""

from __future__ import annotations

import os
import signal
import time
from types import ModuleType

import pytest
import redis.asyncio as aredis

from .conftest import Workers, eventually

pytestmark = pytest.mark.timeout(60)

#: Seconds allowed beyond ``idle_timeout`` + one tick (scheduling on a shared machine).
MARGIN_S = 2.0


async def test_a_killed_workers_once_task_runs_on_the_other_without_new_traffic(
    reclaim_app: ModuleType, reclaim_workers: Workers
) -> None:
    app = reclaim_app
    r = aredis.Redis.from_url(app.db_url(0))
    stream = aredis.Redis.from_url(app.db_url(1))
    hold = f"{app.PREFIX}job-1-once"
    backend = app.cachify.async_backend
    try:
        handle = await app.once_victim.kiq(1)

        async def started() -> bool:
            return int(await r.llen("obs:once:started")) == 1

        await eventually(started, 20, "the victim started")
        tag, _, pid = (await r.lindex("obs:once:started", 0)).decode().partition(":")
        assert tag == "1"
        assert await backend.lock_holder(hold) == handle.task_id
        sent = int(await stream.xlen(app.QUEUE))

        os.kill(int(pid), signal.SIGKILL)
        killed_at = time.monotonic()

        # Nothing is sent from here on (a duplicate is refused without publishing).
        assert (await app.once_victim.kiq(1)).task_id == handle.task_id

        async def ran() -> bool:
            return int(await r.llen("obs:once:ran")) >= 1

        bound_s = app.IDLE_TIMEOUT_MS / 1000 + app.TICK_S + MARGIN_S
        await eventually(ran, bound_s, "the killed worker's task ran again")
        recovered_s = time.monotonic() - killed_at
        ran_tag, _, ran_pid = (await r.lindex("obs:once:ran", 0)).decode().partition(":")
        assert ran_tag == "1"
        assert ran_pid != pid
        assert (await handle.wait_result(check_interval=0.05, timeout=10)).return_value == 1

        async def released() -> bool:
            return await backend.lock_holder(hold) is None

        await eventually(released, 5, "the hold was released after the run")

        async def none_pending() -> bool:
            return int((await stream.xpending(app.QUEUE, "taskiq"))["pending"]) == 0

        await eventually(none_pending, 5, "nothing left pending in the stream")
        assert int(await stream.xlen(app.QUEUE)) == sent  # no new message brought it back
        assert await r.llen("obs:once:ran") == 1  # it ran to its end once
        assert "cachify: reclaimed 1 delivery(ies) idle over 2000 ms" in reclaim_workers.log()
        print(
            f"once task ran again {recovered_s:.2f}s after its worker was killed "
            f"(idle_timeout {app.IDLE_TIMEOUT_MS} ms, tick {app.TICK_S}s)"
        )
    finally:
        await r.aclose()
        await stream.aclose()
