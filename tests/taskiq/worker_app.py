"""The Taskiq app of the real-worker tests: ``taskiq worker tests.taskiq.worker_app:broker --workers 2``.

Redis comes from ``CACHIFY_TASKIQ_REDIS`` (``redis://host:port``, no database): the stream
broker on db 1, results on db 2, cachify on db 0. Tasks report what they do to db 0 under
``obs:*`` keys, so the tests observe runs and concurrency from outside the workers.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from typing import Any

import redis
import redis.asyncio as aredis
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from cachify_core import init_cachify
from cachify_taskiq import CachifyMiddleware

BASE_URL = os.environ["CACHIFY_TASKIQ_REDIS"].rstrip("/")
QUEUE = "cachify-taskiq-tests"
#: Key prefix of this app's cachify instance (its pools and holds live in db 0 under it).
PREFIX = "TQ-"


def db_url(db: int) -> str:
    return f"{BASE_URL}/{db}"


cachify = init_cachify(url=db_url(0), prefix=PREFIX, is_global=False)
broker = (
    RedisStreamBroker(db_url(1), queue_name=QUEUE)
    .with_result_backend(RedisAsyncResultBackend(db_url(2), result_ex_time=600))
    .with_middlewares(CachifyMiddleware(cachify=cachify))
)

_async_obs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
_sync_obs = redis.Redis.from_url(db_url(0))


def obs() -> Any:
    """This loop's client for the ``obs:*`` observations."""
    loop = asyncio.get_running_loop()
    client = _async_obs.get(loop)
    if client is None:
        client = _async_obs[loop] = aredis.Redis.from_url(db_url(0))
    return client


@broker.task(once_key="dedup-{n}")
async def dedup(n: int) -> int:
    await obs().incr("obs:dedup:runs")
    await asyncio.sleep(0.5)
    return n * 10


@broker.task(pool_key="pool", pool_max_size=3, pool_backoff=(0.05, 0.4))
async def pooled(i: int) -> int:
    r = obs()
    await r.rpush("obs:pool:seen", await r.incr("obs:pool:now"))
    await asyncio.sleep(0.02)
    await r.rpush("obs:pool:ran", i)
    await r.decr("obs:pool:now")
    return i


@broker.task(pool_key="pool-sync", pool_max_size=2, pool_backoff=(0.05, 0.4))
def pooled_sync(i: int) -> int:
    r = _sync_obs
    r.rpush("obs:spool:seen", r.incr("obs:spool:now"))
    time.sleep(0.02)
    r.rpush("obs:spool:ran", i)
    r.decr("obs:spool:now")
    return i


@broker.task(cache_key="square-{n}")
async def square(n: int) -> int:
    await obs().incr("obs:cache:runs")
    return n * n


#: The kill test's pool: one slot, a 2 s lease renewed every 2/3 s while its holder runs.
KILL_SLOT_TTL_S = 2.0
KILL_BACKOFF_S = (0.1, 0.5)


@broker.task(pool_key="kill", pool_max_size=1, pool_slot_ttl=KILL_SLOT_TTL_S, pool_backoff=KILL_BACKOFF_S)
async def hold_slot(tag: str, seconds: float) -> str:
    await obs().rpush("obs:kill:started", f"{tag}:{os.getpid()}")
    await asyncio.sleep(seconds)
    return tag
