"""The Taskiq app of the real-worker reclaim test:
``taskiq worker tests.taskiq.reclaim_app:broker --workers 2``.

Like :mod:`tests.taskiq.worker_app` (stream broker on db 1, results on db 2, cachify on db 0,
observations under ``obs:*`` in db 0), with its own stream and key prefix, and a short
``idle_timeout``: a killed worker's delivery is reclaimed by the other within about
``IDLE_TIMEOUT_MS`` + one tick (``IDLE_TIMEOUT_MS / 2``).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from typing import Any

import redis.asyncio as aredis
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from cachify_core import init_cachify
from cachify_taskiq import CachifyMiddleware

BASE_URL = os.environ["CACHIFY_TASKIQ_REDIS"].rstrip("/")
QUEUE = "cachify-taskiq-reclaim-tests"
#: Key prefix of this app's cachify instance.
PREFIX = "TQX-"
#: Milliseconds a delivery stays unacknowledged before another worker claims it.
IDLE_TIMEOUT_MS = 2000
#: Seconds between two reclaims in each worker (``min(idle_timeout / 2, 5 s)``).
TICK_S = IDLE_TIMEOUT_MS / 2000
#: How long a run that is not the victim's takes.
BODY_S = 0.05


def db_url(db: int) -> str:
    return f"{BASE_URL}/{db}"


cachify = init_cachify(url=db_url(0), prefix=PREFIX, is_global=False)
broker = (
    RedisStreamBroker(db_url(1), queue_name=QUEUE, idle_timeout=IDLE_TIMEOUT_MS)
    .with_result_backend(RedisAsyncResultBackend(db_url(2), result_ex_time=600))
    .with_middlewares(CachifyMiddleware(cachify=cachify))
)

_async_obs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def obs() -> Any:
    loop = asyncio.get_running_loop()
    client = _async_obs.get(loop)
    if client is None:
        client = _async_obs[loop] = aredis.Redis.from_url(db_url(0))
    return client


@broker.task(once_key="job-{n}")
async def once_victim(n: int) -> int:
    """The first run sleeps a minute (the test kills its worker); any other takes ``BODY_S``."""
    r = obs()
    await r.rpush("obs:once:started", f"{n}:{os.getpid()}")
    first_run = await r.set("obs:once:victim", 1, nx=True)
    await asyncio.sleep(60.0 if first_run else BODY_S)
    await r.rpush("obs:once:ran", f"{n}:{os.getpid()}")
    return n
