"""The Taskiq app of the real-worker waiting-room tests:
``taskiq worker tests.taskiq.room_app:broker --workers 2``.

Like :mod:`tests.taskiq.worker_app` (stream broker on db 1, results on db 2, cachify on db 0,
observations under ``obs:*`` in db 0), with its own stream and key prefix. Every pool here
parks a delivery that finds it full in its waiting room (``pool_on_full="requeue"``, the
default). The stream's ``idle_timeout`` is short, so that the delivery a killed worker was
running is reclaimed within the kill test.
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
QUEUE = "cachify-taskiq-room-tests"
#: Key prefix of this app's cachify instance.
PREFIX = "TQR-"
#: Milliseconds a delivery stays unacknowledged before a worker reclaims it: longer than the
#: kill test's victim runs before it is killed, plus its slot's lease and the line draining after
#: (so that no message is read any more when the victim's delivery comes back).
IDLE_TIMEOUT_MS = 12000
#: Seconds between two reclaims in each worker (``min(idle_timeout / 2, 5 s)``).
TICK_S = IDLE_TIMEOUT_MS / 2000
#: How long each task's body takes.
BODY_S = 0.05
#: The kill test's pool: a short slot lease, so a killed holder's slot frees quickly.
KILL_SLOT_TTL_S = 3.0
#: The fallback backoff (unused while the rooms park), below ``IDLE_TIMEOUT_MS``.
BACKOFF_S = (0.1, 2.0)


def db_url(db: int) -> str:
    return f"{BASE_URL}/{db}"


cachify = init_cachify(url=db_url(0), prefix=PREFIX, is_global=False)
broker = (
    RedisStreamBroker(db_url(1), queue_name=QUEUE, idle_timeout=IDLE_TIMEOUT_MS)
    .with_result_backend(RedisAsyncResultBackend(db_url(2), result_ex_time=600))
    .with_middlewares(CachifyMiddleware(cachify=cachify))
)

_async_obs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
_sync_obs = redis.Redis.from_url(db_url(0))


def obs() -> Any:
    loop = asyncio.get_running_loop()
    client = _async_obs.get(loop)
    if client is None:
        client = _async_obs[loop] = aredis.Redis.from_url(db_url(0))
    return client


@broker.task(pool_key="room", pool_max_size=2, pool_backoff=BACKOFF_S)
async def in_room(i: int) -> int:
    r = obs()
    await r.rpush("obs:room:started", i)
    await r.rpush("obs:room:seen", await r.incr("obs:room:now"))
    await asyncio.sleep(BODY_S)
    await r.decr("obs:room:now")
    await r.rpush("obs:room:ran", i)
    return i


@broker.task(pool_key="room-sync", pool_max_size=2, pool_backoff=BACKOFF_S)
def in_room_sync(i: int) -> int:
    r = _sync_obs
    r.rpush("obs:sroom:started", i)
    r.rpush("obs:sroom:seen", r.incr("obs:sroom:now"))
    time.sleep(BODY_S)
    r.decr("obs:sroom:now")
    r.rpush("obs:sroom:ran", i)
    return i


@broker.task(pool_key="kill-room", pool_max_size=1, pool_slot_ttl=KILL_SLOT_TTL_S, pool_backoff=BACKOFF_S)
async def victim_or_waiter(i: int) -> int:
    """Task 0's first run holds the slot for a minute (the test kills its worker); every other
    run takes ``BODY_S``."""
    r = obs()
    await r.rpush("obs:kill:started", f"{i}:{os.getpid()}")
    first_victim_run = i == 0 and await r.set("obs:kill:victim", 1, nx=True)
    await asyncio.sleep(60.0 if first_victim_run else BODY_S)
    await r.rpush("obs:kill:ran", i)
    return i
