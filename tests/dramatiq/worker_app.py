"""The app real worker processes run: ``dramatiq tests.dramatiq.worker_app:broker``.

Everything it needs comes from the environment (the test's private Redis); each actor reports
what it saw to Redis database 2, so the tests observe workers from outside: executions,
concurrency (INCR on entry, DECR on exit, every entry value RPUSHed), retries and requeues as
the message carried them, and process ids for the kill test. ``EnqueueSpy`` counts every
enqueue with a delay, per actor: a waiting room hands over without delayed messages.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dramatiq
import redis
import redis.asyncio as aredis
from dramatiq.broker import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message
from dramatiq.middleware import AsyncIO, CurrentMessage, Middleware
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from cachify_core import init_cachify
from cachify_core.tasks import RESERVATION_FIELD
from cachify_dramatiq import REQUEUES_OPTION, CachifyMiddleware

#: The test's Redis server (any database; this module picks its own numbers).
REDIS_URL_ENV = "CACHIFY_DRAMATIQ_TEST_REDIS_URL"
BROKER_DB, CACHIFY_DB, OBSERVATIONS_DB = 1, 0, 2
#: Pool tests requeue often: short backoffs keep them quick (the default is (1, 60)).
POOL_BACKOFF_S = (0.02, 0.25)
#: The kill test waits for a dead worker's slot: it must expire quickly.
HOG_SLOT_TTL_S = 2.0
#: The waiting-room kill test's slot TTL (the sweeper moves the line once it passes).
ROOM_SLOT_TTL_S = 3.0
#: The queue of the waiting-room kill test's holder: only the worker to be killed consumes it.
HOLDER_QUEUE = "room-holder"
#: Waiting-room tests: a backoff so long that a fallback requeue would show as a slow test too.
ROOM_BACKOFF_S = (5.0, 10.0)


def with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


BASE_URL = os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0")

broker = RedisBroker(url=with_db(BASE_URL, BROKER_DB))  # type: ignore[no-untyped-call]
cachify = init_cachify(url=with_db(BASE_URL, CACHIFY_DB), is_global=False, prefix="dqt-")
results = RedisBackend(url=with_db(BASE_URL, BROKER_DB))


@functools.cache
def observations() -> redis.Redis:
    return redis.Redis.from_url(with_db(BASE_URL, OBSERVATIONS_DB))


class EnqueueSpy(Middleware):
    """Counts enqueues with a delay (a backoff requeue, a Retries retry), per actor name."""

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if delay:
            observations().hincrby("delayed", message.actor_name, 1)


broker.add_middleware(CachifyMiddleware(cachify=cachify))
broker.add_middleware(AsyncIO())
broker.add_middleware(CurrentMessage())
broker.add_middleware(Results(backend=results))  # type: ignore[no-untyped-call]
broker.add_middleware(EnqueueSpy())


def _options() -> dict[str, Any]:
    message = CurrentMessage.get_current_message()
    return {} if message is None else message.options


@dramatiq.actor(broker=broker)
def ping(token: str) -> None:
    observations().rpush("ping", f"{token}:{os.getpid()}")


@dramatiq.actor(broker=broker, once_key="dedup-{key}", store_results=True, max_retries=0)
def dedup(key: str, hold_s: float) -> str:
    observations().incr(f"dedup:{key}:runs")
    time.sleep(hold_s)
    return f"done-{key}"


def _enter(run: str) -> None:
    obs = observations()
    obs.rpush(f"pool:{run}:seen", obs.incr(f"pool:{run}:active"))


def _leave(run: str, i: int) -> None:
    options = _options()
    obs = observations()
    with obs.pipeline() as p:
        p.decr(f"pool:{run}:active")
        p.hincrby(f"pool:{run}:runs", str(i), 1)
        p.rpush(f"pool:{run}:retries", options.get("retries", 0))
        p.incrby(f"pool:{run}:requeues", options.get(REQUEUES_OPTION, 0))
        p.execute()


@dramatiq.actor(
    broker=broker,
    pool_key="erp-{run}",
    pool_max_size=3,
    pool_backoff=POOL_BACKOFF_S,
    max_retries=0,
    store_results=True,
)
def pooled(run: str, i: int, work_s: float) -> int:
    _enter(run)
    try:
        time.sleep(work_s)
    finally:
        _leave(run, i)
    return i


@functools.cache
def async_observations() -> aredis.Redis:
    # One per process, used only on dramatiq's event loop thread.
    return aredis.Redis.from_url(with_db(BASE_URL, OBSERVATIONS_DB))


@dramatiq.actor(
    broker=broker,
    pool_key="erp-{run}",
    pool_max_size=3,
    pool_backoff=POOL_BACKOFF_S,
    max_retries=0,
    store_results=True,
)
async def apooled(run: str, i: int, work_s: float) -> int:
    obs = async_observations()
    await obs.rpush(f"pool:{run}:seen", await obs.incr(f"pool:{run}:active"))
    try:
        await asyncio.sleep(work_s)
    finally:
        options = _options()
        await obs.decr(f"pool:{run}:active")
        await obs.hincrby(f"pool:{run}:runs", str(i), 1)
        await obs.rpush(f"pool:{run}:retries", options.get("retries", 0))
        await obs.incrby(f"pool:{run}:requeues", options.get(REQUEUES_OPTION, 0))
    return i


@dramatiq.actor(broker=broker, cache_key="square-{x}", store_results=True)
def square(x: int) -> int:
    observations().incr(f"square:{x}:runs")
    return x * x


@dramatiq.actor(
    broker=broker,
    pool_key="hog-{run}",
    pool_max_size=1,
    pool_slot_ttl=HOG_SLOT_TTL_S,
    pool_backoff=(0.05, 0.2),
    max_retries=0,
)
def hog(run: str, label: str, hold_s: float) -> None:
    observations().rpush(f"hog:{run}:started", f"{label}:{os.getpid()}:{time.time()}")
    time.sleep(hold_s)


def _room_leave(run: str, i: int) -> None:
    options = _options()
    obs = observations()
    with obs.pipeline() as p:
        p.decr(f"room:{run}:active")
        p.hincrby(f"room:{run}:runs", str(i), 1)
        p.rpush(f"room:{run}:retries", options.get("retries", 0))
        p.hset(f"room:{run}:requeues", str(i), options.get(REQUEUES_OPTION, 0))
        p.hset(f"room:{run}:reserved", str(i), int(bool(options.get(RESERVATION_FIELD))))
        p.execute()


@dramatiq.actor(
    broker=broker,
    pool_key="room-{run}",
    pool_max_size=2,
    pool_backoff=ROOM_BACKOFF_S,
    max_retries=0,
    store_results=True,
)
def roomed(run: str, i: int, work_s: float) -> int:
    obs = observations()
    obs.rpush(f"room:{run}:order", i)
    obs.rpush(f"room:{run}:seen", obs.incr(f"room:{run}:active"))
    try:
        time.sleep(work_s)
    finally:
        _room_leave(run, i)
    return i


@dramatiq.actor(
    broker=broker,
    pool_key="room-{run}",
    pool_max_size=2,
    pool_backoff=ROOM_BACKOFF_S,
    max_retries=0,
    store_results=True,
)
async def aroomed(run: str, i: int, work_s: float) -> int:
    obs = async_observations()
    await obs.rpush(f"room:{run}:order", i)
    await obs.rpush(f"room:{run}:seen", await obs.incr(f"room:{run}:active"))
    try:
        await asyncio.sleep(work_s)
    finally:
        options = _options()
        await obs.decr(f"room:{run}:active")
        await obs.hincrby(f"room:{run}:runs", str(i), 1)
        await obs.rpush(f"room:{run}:retries", options.get("retries", 0))
        await obs.hset(f"room:{run}:requeues", str(i), options.get(REQUEUES_OPTION, 0))
        await obs.hset(f"room:{run}:reserved", str(i), int(bool(options.get(RESERVATION_FIELD))))
    return i


_KILL_POOL: dict[str, Any] = {
    "pool_key": "room-kill-{run}",
    "pool_max_size": 1,
    "pool_slot_ttl": ROOM_SLOT_TTL_S,
    "pool_backoff": ROOM_BACKOFF_S,
    "max_retries": 0,
}


@dramatiq.actor(broker=broker, queue_name=HOLDER_QUEUE, **_KILL_POOL)
def room_holder(run: str) -> None:
    observations().rpush(f"room:{run}:holder", os.getpid())
    time.sleep(60.0)  # killed before it ends


@dramatiq.actor(broker=broker, **_KILL_POOL)
def room_waiter(run: str, i: int) -> None:
    obs = observations()
    obs.rpush(f"room:{run}:seen", obs.incr(f"room:{run}:active"))
    try:
        time.sleep(0.05)
    finally:
        _room_leave(run, i)
