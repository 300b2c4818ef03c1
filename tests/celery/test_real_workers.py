"""Real ``celery worker`` processes over a real Redis broker and result backend.

Two prefork workers with two children each take the ``celery`` queue; a solo worker takes the
``host`` queue and is SIGKILLed whole, as a dying host. Every claim is judged from outside the
workers: tasks write what they saw to the observations database, the test reads it after.
"""

from __future__ import annotations

import importlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from celery.exceptions import TimeLimitExceeded, WorkerLostError

from .support import REDIS_ENV, RedisDbs, WorkerProcess, hold_holder, pool_size, wait_until

pytestmark = [
    # Celery's Redis result backend calls redis-py's deprecated setex: not ours to fix
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
    pytest.mark.timeout(120),
]

#: Worker start-up on a loaded 2-core machine takes a few seconds; this bounds it.
READY_TIMEOUT_S = 45.0


@dataclass
class Workers:
    app: ModuleType
    prefork: list[WorkerProcess]
    host: WorkerProcess

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.log_tail()}" for w in [*self.prefork, self.host])


@pytest.fixture(scope="module")
def workers(redis_dbs: RedisDbs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    everything = (redis_dbs.broker, redis_dbs.backend, redis_dbs.cachify, redis_dbs.observe)
    redis_dbs.flush(*everything)
    previous = os.environ.get(REDIS_ENV)
    os.environ[REDIS_ENV] = redis_dbs.base  # this process imports the same app to send tasks
    module = importlib.import_module("tests.celery.worker_app")
    logs: Path = tmp_path_factory.mktemp("celery-workers")
    prefork = [WorkerProcess(f"w{i}", "prefork", 2, f"celery,w{i}", logs / f"w{i}.log") for i in (1, 2)]
    host = WorkerProcess("host", "solo", 1, "host", logs / "host.log")
    everyone = [*prefork, host]
    try:
        for worker in everyone:
            worker.start(redis_dbs.base)
        for worker in everyone:  # each answers on its own queue once it consumes
            module.hello.apply_async((worker.name,), queue=worker.queues.split(",")[-1]).get(
                timeout=READY_TIMEOUT_S
            )
        yield Workers(module, prefork, host)
    finally:
        for worker in everyone:
            worker.kill()
        if previous is None:
            os.environ.pop(REDIS_ENV, None)
        else:
            os.environ[REDIS_ENV] = previous
        redis_dbs.flush(*everything)


def ran(observed: Any, task: str) -> list[str]:
    return [v.decode() for v in observed.lrange(f"ran:{task}", 0, -1)]


def test_200_sends_of_one_once_key_while_it_runs_execute_once(workers: Workers, observed: Any) -> None:
    app = workers.app
    first = app.slow_once.delay(7, 1.5)
    assert wait_until(lambda: ran(observed, "slow_once") == ["7"], 20), workers.logs()

    duplicates = [app.slow_once.delay(7, 1.5) for _ in range(200)]

    assert {d.id for d in duplicates} == {first.id}  # each send got the holder's AsyncResult
    assert first.get(timeout=20) == 7
    assert duplicates[-1].get(timeout=1) == 7
    assert ran(observed, "slow_once") == ["7"]
    assert hold_holder(app.slow_once, 7, 1.5) is None  # released when the run ended
    again = app.slow_once.delay(7, 0)
    assert again.id != first.id
    assert again.get(timeout=20) == 7
    assert ran(observed, "slow_once") == ["7", "7"]


def test_200_tasks_on_a_pool_of_3_run_once_each_never_more_than_3_at_once(
    workers: Workers, observed: Any
) -> None:
    app = workers.app
    results = [app.pooled_work.delay(n, 0.02) for n in range(200)]
    deadline = time.monotonic() + 60
    for result in results:
        assert result.get(timeout=max(0.1, deadline - time.monotonic())) is not None, workers.logs()

    executions = sorted(int(n) for n in ran(observed, "pooled_work"))
    assert executions == list(range(200))  # each exactly once, none lost
    levels = [int(v) for v in observed.lrange("levels:work", 0, -1)]
    assert len(levels) == 200
    assert max(levels) <= app.POOL_MAX
    assert max(levels) >= 2  # 4 worker children did contend for the 3 slots
    assert all(r.state == "SUCCESS" for r in results)
    assert pool_size(app.pooled_work, 0, 0) == 0
    assert not [k for k in _cachify_keys(workers) if b"celery-slot-" in k]  # every slot record dropped


def _cachify_keys(workers: Workers) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(workers.app.DBS.cachify)
    try:
        return list(client.scan_iter(match="CT-*", count=1000))
    finally:
        client.close()


def test_a_cache_hit_is_not_executed_and_is_stored_as_success(workers: Workers, observed: Any) -> None:
    app = workers.app
    first = app.report.delay("mon").get(timeout=20)
    hit = app.report.delay("mon")

    assert hit.get(timeout=20) == first
    assert app.app.AsyncResult(hit.id).state == "SUCCESS"  # in the result backend
    assert ran(observed, "report") == ["mon"]
    assert app.report.delay("tue").get(timeout=20)["day"] == "tue"
    assert ran(observed, "report") == ["mon", "tue"]


def test_a_sigkilled_prefork_child_frees_its_hold_and_slot_at_once(workers: Workers, observed: Any) -> None:
    app = workers.app
    doomed = app.doomed.delay("k1")
    assert wait_until(lambda: observed.get("pid:k1") is not None, 20), workers.logs()
    assert pool_size(app.doomed, "k1") == 1
    assert hold_holder(app.doomed, "k1") == doomed.id

    os.kill(int(observed.get("pid:k1")), signal.SIGKILL)
    killed = time.monotonic()
    # pool_slot_ttl is 30 s: freed well within it means the worker's main process released them
    assert wait_until(
        lambda: pool_size(app.doomed, "k1") == 0 and hold_holder(app.doomed, "k1") is None, 10
    ), workers.logs()
    assert time.monotonic() - killed < 10
    with pytest.raises(WorkerLostError):
        doomed.get(timeout=10)
    assert app.after_doomed.delay("k1").get(timeout=20) == "k1"  # the slot is usable again


def test_revoke_with_terminate_frees_the_hold_and_slot(workers: Workers, observed: Any) -> None:
    app = workers.app
    doomed = app.doomed.delay("k2")
    assert wait_until(lambda: observed.get("pid:k2") is not None, 20), workers.logs()
    assert pool_size(app.doomed, "k2") == 1

    doomed.revoke(terminate=True, signal="SIGKILL")
    assert wait_until(
        lambda: pool_size(app.doomed, "k2") == 0 and hold_holder(app.doomed, "k2") is None, 10
    ), workers.logs()
    assert wait_until(lambda: doomed.state == "REVOKED", 10)


def test_a_hard_time_limit_frees_the_hold_and_slot(workers: Workers, observed: Any) -> None:
    app = workers.app
    result = app.over_time.delay("t1")
    assert wait_until(lambda: observed.get("pid:t1") is not None, 20), workers.logs()
    assert hold_holder(app.over_time, "t1") == result.id
    # time_limit=1 s, pool_slot_ttl=30 s: freed by the worker's main process, not by the TTL
    assert wait_until(
        lambda: pool_size(app.over_time, "t1") == 0 and hold_holder(app.over_time, "t1") is None, 10
    ), workers.logs()
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=10)


def test_a_dead_hosts_slot_frees_within_pool_slot_ttl(workers: Workers, observed: Any) -> None:
    app = workers.app
    app.host_task.apply_async(("h1", 60), queue="host")
    assert wait_until(lambda: observed.get("pid:h1") is not None, 20), workers.logs()
    assert pool_size(app.host_task, "h1", 60) == 1

    workers.host.kill()  # the worker and its process group, SIGKILL: nothing runs a release
    killed = time.monotonic()
    assert pool_size(app.host_task, "h1", 60) == 1
    assert wait_until(lambda: pool_size(app.host_task, "h1", 60) == 0, 2 + 2)  # pool_slot_ttl=2
    assert time.monotonic() - killed <= 2 + 1.0
    assert app.host_task.delay("h2", 0).get(timeout=20) == "h2"  # on the surviving workers


def test_a_handed_over_task_keeps_its_own_parent_and_is_no_child_of_the_releasing_task(
    workers: Workers, observed: Any
) -> None:
    app = workers.app
    first = app.lineage.delay("first", 1.0)
    assert wait_until(lambda: observed.exists("lineage:first"), 20), workers.logs()
    root = app.lineage.delay("root", 0)  # parks behind first: handed over when first ends
    sender = app.sends_lineage.delay("child")  # its lineage(child) parks too, behind root
    assert first.get(timeout=20) == "first"
    assert root.get(timeout=20) == "root"
    child_id = sender.get(timeout=20)
    assert app.app.AsyncResult(child_id).get(timeout=20) == "child"

    seen = {
        tag: {k.decode(): v.decode() for k, v in observed.hgetall(f"lineage:{tag}").items()}
        for tag in ("root", "child")
    }
    assert seen["root"]["parent"] == "None"  # sent by this test, not by the task that freed the slot
    assert seen["root"]["root"] in ("None", root.id)
    assert seen["child"] == {"parent": sender.id, "root": sender.id}  # still the sender's child
    # the releasing runs have no children: a hand-over is not published as one
    assert app.app.AsyncResult(first.id).children in (None, [])
    assert app.app.AsyncResult(root.id).children in (None, [])
    assert [c.id for c in app.app.AsyncResult(sender.id).children or []] == [child_id]
