# mypy: disable-error-code="untyped-decorator"
# (celery ships no type information, so every @app.task is an untyped decorator)
"""The app real ``celery worker`` processes run in the tests (``-A tests.celery.worker_app``).

Its Redis comes from ``CACHIFY_CELERY_TEST_REDIS`` (a base URL; databases as in support.py).
Tasks report what they see to the observations database, so tests judge from outside the
workers: ``ran:<task>`` lists every execution; ``levels:work`` holds, for every
``pooled_work`` run, how many runs were inside the pool as it started (INCR on entry, DECR on
exit of the ``inside:work`` counter).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery

from cachify_celery import install
from cachify_core import init_cachify

from .support import REDIS_ENV, RedisDbs

_base = os.environ.get(REDIS_ENV)
if not _base:
    raise RuntimeError(f"{REDIS_ENV} is not set: this app is started by tests/celery/test_real_workers.py")
DBS = RedisDbs(_base)

cachify = init_cachify(url=DBS.cachify, prefix="CT-", is_global=False)
app = Celery("cachify_celery_tests", broker=DBS.broker, backend=DBS.backend)
install(app, cachify=cachify)  # tasks use this instance, not the global one
app.conf.update(
    worker_prefetch_multiplier=1,  # spread a burst over every worker instead of the first one
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
observe = redis.Redis.from_url(DBS.observe)

#: The pool of ``pooled_work``: at most this many at once across every worker.
POOL_MAX = 3


@app.task
def hello(name: str) -> str:
    """Readiness probe, routed to one worker's own queue."""
    return f"hello {name}"


@app.task(once_key="order-{order_id}")
def slow_once(order_id: int, seconds: float) -> int:
    observe.rpush("ran:slow_once", order_id)
    time.sleep(seconds)
    return order_id


@app.task(pool_key="work", pool_max_size=POOL_MAX, pool_backoff=(0.02, 0.2), acks_late=True)
def pooled_work(n: int, seconds: float) -> int:
    level = observe.incr("inside:work")
    try:
        observe.rpush("levels:work", level)
        time.sleep(seconds)
    finally:
        observe.decr("inside:work")
    observe.rpush("ran:pooled_work", n)
    return n


@app.task(bind=True, pool_key="lineage", pool_max_size=1)
def lineage(self: Any, tag: str, seconds: float) -> str:
    """Records the parent and root ids its run saw (``lineage:<tag>``); one at a time."""
    observe.hset(
        f"lineage:{tag}", mapping={"parent": str(self.request.parent_id), "root": str(self.request.root_id)}
    )
    time.sleep(seconds)
    return tag


@app.task(bind=True)
def sends_lineage(self: Any, tag: str) -> str:
    """Sends ``lineage(tag)`` from inside a task: its parent is this task."""
    return str(lineage.delay(tag, 0).id)


@app.task(cache_key="report-{day}", cache_ttl=60)
def report(day: str) -> dict[str, Any]:
    observe.rpush("ran:report", day)
    return {"day": day, "pid": os.getpid()}


@app.task(once_key="doomed-{tag}", pool_key="doomed", pool_max_size=1, pool_slot_ttl=30, acks_late=True)
def doomed(tag: str) -> None:
    """Holds its hold and slot until killed (the test SIGKILLs the prefork child running it)."""
    observe.set(f"pid:{tag}", os.getpid())
    time.sleep(60)


@app.task(pool_key="doomed", pool_max_size=1, pool_backoff=(0.05, 0.2))
def after_doomed(tag: str) -> str:
    observe.rpush("ran:after_doomed", tag)
    return tag


@app.task(pool_key="host", pool_max_size=1, pool_slot_ttl=2, pool_backoff=(0.05, 0.2))
def host_task(tag: str, seconds: float) -> str:
    """On the worker whose whole host (process group) the test kills: its slot frees by TTL."""
    observe.set(f"pid:{tag}", os.getpid())
    observe.rpush("ran:host_task", tag)
    time.sleep(seconds)
    return tag


@app.task(once_key="limited-{tag}", pool_key="limited", pool_max_size=1, pool_slot_ttl=30, time_limit=1)
def over_time(tag: str) -> None:
    """Outlives its hard time limit: the worker's main process kills the child running it."""
    observe.set(f"pid:{tag}", os.getpid())
    time.sleep(60)
