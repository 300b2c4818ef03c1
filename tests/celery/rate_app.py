# mypy: disable-error-code="untyped-decorator"
# (celery ships no type information, so every @app.task is an untyped decorator)
"""The app of the real-worker rate tests (``-A tests.celery.rate_app``, test_rate_workers.py).

Its Redis comes from ``CACHIFY_CELERY_TEST_REDIS`` (databases as in support.py). ``rated`` is
limited to ``RATE`` per second on a key of its run; each execution pushes ``"<i> <unix time>
<retries>"`` to ``rate:<run>:starts`` in the observations database as its body starts.
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
    raise RuntimeError(f"{REDIS_ENV} is not set: this app is started by tests/celery/test_rate_workers.py")
DBS = RedisDbs(_base)
#: Calls per second of ``rated`` (burst: the same number, the default).
RATE = 10

cachify = init_cachify(url=DBS.cachify, prefix="CTR-", is_global=False)
app = Celery("cachify_celery_rate_tests", broker=DBS.broker, backend=DBS.backend)
install(app, cachify=cachify)
app.conf.update(
    task_default_queue="rate",
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
observe = redis.Redis.from_url(DBS.observe)


@app.task(shared=False, ignore_result=False)
def hello(name: str) -> str:
    """Readiness probe, routed to one worker's own queue."""
    return f"hello {name}"


@app.task(shared=False, bind=True, rate_key="rate-{run}", rate=f"{RATE}/s", acks_late=True)
def rated(self: Any, run: str, i: int) -> int:
    observe.rpush(f"rate:{run}:starts", f"{i} {time.time():.6f} {self.request.retries or 0}")
    return i
