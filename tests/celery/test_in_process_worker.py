# mypy: disable-error-code="untyped-decorator"
# (celery ships no type information, so every @app.task is an untyped decorator)
"""A Celery worker inside the test process (``celery.contrib.testing.worker.start_worker``),
over the real Redis broker and result backend, once with the threads pool and once solo.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from cachify_celery import REQUEUES_HEADER, install
from cachify_core import init_cachify

from .support import RedisDbs, hold_holder, pool_size, wait_until

pytestmark = [
    # Celery's Redis result backend calls redis-py's deprecated setex: not ours to fix
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
    pytest.mark.timeout(60),
]

POOL_MAX = 3


def build_app(dbs: RedisDbs) -> SimpleNamespace:
    """The app and its tasks; each task reports what it saw to the observations database."""
    import redis

    observe = redis.Redis.from_url(dbs.observe)
    instance = init_cachify(url=dbs.cachify, prefix=f"W{uuid.uuid4().hex[:6]}-", is_global=False)
    app = Celery("in_process", broker=dbs.broker, backend=dbs.backend, set_as_current=False)
    install(app, cachify=instance)
    app.conf.update(worker_prefetch_multiplier=1, result_expires=600, broker_connection_retry_on_startup=True)

    @app.task(shared=False, once_key="order-{order_id}")
    def slow_once(order_id: int, seconds: float) -> int:
        observe.rpush("ran:slow_once", order_id)
        time.sleep(seconds)
        return order_id

    @app.task(shared=False, pool_key="work", pool_max_size=POOL_MAX, pool_backoff=(0.01, 0.1))
    def pooled_work(n: int) -> int:
        observe.rpush("levels:work", observe.incr("inside:work"))
        time.sleep(0.005)
        observe.decr("inside:work")
        observe.rpush("ran:pooled_work", n)
        return n

    @app.task(shared=False, cache_key="report-{day}", cache_ttl=60)
    def report(day: str) -> dict[str, str]:
        observe.rpush("ran:report", day)
        return {"day": day}

    @app.task(
        shared=False, bind=True, pool_key="stripe", pool_max_size=1, pool_backoff=(0.05, 0.1), max_retries=0
    )
    def charge(self: Any, cents: int) -> int:
        observe.rpush("ran:charge", f"{self.request.id} {self.request.retries}")
        return cents

    @app.task(shared=False, bind=True, once_key="retry-{x}", max_retries=1)
    def retried(self: Any, x: int) -> int:
        observe.rpush("ran:retried", f"{self.request.retries} {hold_holder(retried, x)}")
        if self.request.retries == 0:
            raise self.retry(countdown=0.5)
        return x

    @app.task(shared=False, bind=True)
    @instance.pooled(key="stacked", max_size=1, raise_on_full=True)  # a plain decorator, stacked
    def stacked(self: Any, n: int) -> int:
        requeues = (self.request.headers or {}).get(REQUEUES_HEADER, 0)
        observe.rpush("ran:stacked", f"{n} {requeues}")
        return n

    return SimpleNamespace(app=app, cachify=instance, observe=observe, **{
        t.__name__: t for t in (slow_once, pooled_work, report, charge, retried, stacked)
    })  # fmt: skip


@pytest.fixture(scope="module", params=["threads", "solo"])
def env(request: pytest.FixtureRequest, redis_dbs: RedisDbs) -> Iterator[SimpleNamespace]:
    redis_dbs.flush(redis_dbs.broker, redis_dbs.backend)
    ns = build_app(redis_dbs)
    ns.pool = request.param
    try:
        with start_worker(
            ns.app, pool=request.param, concurrency=4, perform_ping_check=False, shutdown_timeout=20
        ):
            yield ns
    finally:
        ns.observe.close()
        redis_dbs.flush(redis_dbs.broker, redis_dbs.backend)


def ran(env: SimpleNamespace, task: str) -> list[str]:
    return [v.decode() for v in env.observe.lrange(f"ran:{task}", 0, -1)]


def test_200_sends_while_one_runs_execute_once(env: SimpleNamespace, observed: Any) -> None:
    first = env.slow_once.delay(1, 0.5)
    assert wait_until(lambda: ran(env, "slow_once") == ["1"], 10)
    duplicates = [env.slow_once.delay(1, 0.5) for _ in range(200)]
    assert {d.id for d in duplicates} == {first.id}
    assert first.get(timeout=10) == 1
    assert ran(env, "slow_once") == ["1"]
    assert env.slow_once.delay(1, 0).get(timeout=10) == 1  # released: a new run is accepted
    assert ran(env, "slow_once") == ["1", "1"]


def test_200_pooled_tasks_run_once_each_at_most_3_at_once(env: SimpleNamespace, observed: Any) -> None:
    results = [env.pooled_work.delay(n) for n in range(200)]
    deadline = time.monotonic() + 40
    for result in results:
        result.get(timeout=max(0.1, deadline - time.monotonic()))
    assert sorted(int(n) for n in ran(env, "pooled_work")) == list(range(200))
    levels = [int(v) for v in env.observe.lrange("levels:work", 0, -1)]
    assert max(levels) <= POOL_MAX
    assert pool_size(env.pooled_work, 0) == 0


def test_a_cache_hit_is_stored_as_success_in_the_result_backend(env: SimpleNamespace, observed: Any) -> None:
    first = env.report.delay("mon").get(timeout=10)
    hit = env.report.delay("mon")
    assert hit.get(timeout=10) == first
    assert env.app.AsyncResult(hit.id).state == "SUCCESS"
    assert ran(env, "report") == ["mon"]


def test_a_requeue_keeps_the_task_id_and_the_retry_budget(env: SimpleNamespace, observed: Any) -> None:
    held, freed = threading.Event(), threading.Event()

    def hold_the_pool() -> None:
        with env.cachify.pool("stripe", max_size=1):
            held.set()
            time.sleep(0.4)
        freed.set()

    threading.Thread(target=hold_the_pool, daemon=True).start()
    assert held.wait(5)
    result = env.charge.delay(500)
    assert result.get(timeout=15) == 500  # max_retries=0, yet it came back after requeues
    assert freed.is_set()
    assert ran(env, "charge") == [f"{result.id} 0"]


def test_retry_keeps_the_hold_until_the_last_run(env: SimpleNamespace, observed: Any) -> None:
    result = env.retried.delay(1)
    assert wait_until(lambda: len(ran(env, "retried")) == 1, 10)
    assert env.retried.delay(1).id == result.id  # still held while the retry waits
    assert result.get(timeout=10) == 1
    assert ran(env, "retried") == [f"0 {result.id}", f"1 {result.id}"]
    assert hold_holder(env.retried, 1) is None


def test_a_task_expired_before_it_started_gives_its_hold_back(env: SimpleNamespace, observed: Any) -> None:
    result = env.slow_once.apply_async((2, 0), countdown=0.5, expires=0.2)
    assert hold_holder(env.slow_once, 2, 0) == result.id
    assert wait_until(lambda: hold_holder(env.slow_once, 2, 0) is None, 10)
    assert result.state == "REVOKED"
    assert ran(env, "slow_once") == []


def test_a_stacked_pooled_decorator_is_requeued_through_the_broker(
    env: SimpleNamespace, observed: Any
) -> None:
    held = threading.Event()

    def hold_the_pool() -> None:
        with env.cachify.pool("stacked", max_size=1):
            held.set()
            time.sleep(0.3)

    threading.Thread(target=hold_the_pool, daemon=True).start()
    assert held.wait(5)
    result = env.stacked.delay(3)
    assert result.get(timeout=20) == 3  # default backoff (1, 60): back within a few seconds
    [line] = ran(env, "stacked")
    n, requeues = line.split()
    assert n == "3"
    assert int(requeues) >= 1  # it found the pool full at least once, and came back
