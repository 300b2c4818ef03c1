"""The app of the real-worker rate tests: ``dramatiq tests.dramatiq.rate_app:broker``.

On the databases of :mod:`tests.dramatiq.worker_app` (its environment variable), its own queue
and key prefix. ``rated`` is limited to ``RATE`` per second on a key of its run; each execution
pushes ``"<i> <unix time> <retries>"`` to ``rate:<run>:starts`` in the observations database as
its body starts (``retries``: the message's own counter, read through ``CurrentMessage``).
"""

from __future__ import annotations

import functools
import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from cachify_core import init_cachify
from cachify_dramatiq import CachifyMiddleware

from .worker_app import BROKER_DB, CACHIFY_DB, OBSERVATIONS_DB, REDIS_URL_ENV, with_db

QUEUE = "rate-tests"
#: Calls per second of ``rated`` (burst: the same number, the default).
RATE = 10

BASE_URL = os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0")
broker = RedisBroker(url=with_db(BASE_URL, BROKER_DB))  # type: ignore[no-untyped-call]
cachify = init_cachify(url=with_db(BASE_URL, CACHIFY_DB), is_global=False, prefix="dqr-")
broker.add_middleware(CachifyMiddleware(cachify=cachify))
broker.add_middleware(CurrentMessage())


@functools.cache
def observations() -> redis.Redis:
    return redis.Redis.from_url(with_db(BASE_URL, OBSERVATIONS_DB))


@dramatiq.actor(broker=broker, queue_name=QUEUE)
def ping(token: str) -> None:
    observations().rpush("ping", f"{token}:{os.getpid()}")


@dramatiq.actor(broker=broker, queue_name=QUEUE, rate_key="rate-{run}", rate=f"{RATE}/s", max_retries=3)
def rated(run: str, i: int) -> None:
    message = CurrentMessage.get_current_message()
    retries = int(message.options.get("retries", 0)) if message is not None else -1
    observations().rpush(f"rate:{run}:starts", f"{i} {time.time():.6f} {retries}")
