"""The Taskiq app of the real-worker rate tests:
``taskiq worker tests.taskiq.rate_app:broker --workers 2``.

Like :mod:`tests.taskiq.worker_app` (stream broker on db 1, results on db 2, cachify on db 0,
observations under ``obs:*`` in db 0), with its own stream and key prefix. ``rated`` is limited
to ``RATE`` per second on a key of its run; each execution pushes ``"<i> <unix time>
<retries>"`` to ``obs:rate:<run>:starts`` as its body starts (``retries``: Taskiq's
``_retries`` label; absent, 0).
"""

from __future__ import annotations

import os
import time

import redis
from taskiq import Context, TaskiqDepends
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from cachify_core import init_cachify
from cachify_taskiq import CachifyMiddleware

BASE_URL = os.environ["CACHIFY_TASKIQ_REDIS"].rstrip("/")
QUEUE = "cachify-taskiq-rate-tests"
#: Key prefix of this app's cachify instance.
PREFIX = "TQT-"
#: Calls per second of ``rated`` (burst: the same number, the default).
RATE = 10


def db_url(db: int) -> str:
    return f"{BASE_URL}/{db}"


cachify = init_cachify(url=db_url(0), prefix=PREFIX, is_global=False)
broker = (
    RedisStreamBroker(db_url(1), queue_name=QUEUE)
    .with_result_backend(RedisAsyncResultBackend(db_url(2), result_ex_time=600))
    .with_middlewares(CachifyMiddleware(cachify=cachify))
)
_obs = redis.Redis.from_url(db_url(0))


def rated(run: str, i: int, context: Context = TaskiqDepends(Context)) -> int:  # noqa: B008 (Taskiq DI)
    retries = int(context.message.labels.get("_retries", 0))
    _obs.rpush(f"obs:rate:{run}:starts", f"{i} {time.time():.6f} {retries}")
    return i


# Taskiq reads the annotations at declaration: this module's are strings (postponed).
rated.__annotations__ = {"run": str, "i": int, "context": Context, "return": int}
rated_task = broker.task("rate_tests:rated", rate_key="rate-{run}", rate=f"{RATE}/s")(rated)
