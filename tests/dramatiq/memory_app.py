"""An app that must not start: cachify on its embedded in-memory backend, a ``RedisBroker``
whose workers are other processes (``dramatiq tests.dramatiq.memory_app:broker``)."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

from cachify_core import init_cachify
from cachify_dramatiq import CachifyMiddleware

from .worker_app import BROKER_DB, REDIS_URL_ENV, with_db

broker = RedisBroker(url=with_db(os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0"), BROKER_DB))  # type: ignore[no-untyped-call]
# AsyncIO first: its event loop thread (not a daemon) is running when cachify refuses to boot.
broker.add_middleware(AsyncIO())
broker.add_middleware(CachifyMiddleware(cachify=init_cachify(is_global=False)))


@dramatiq.actor(broker=broker, once_key="job-{x}")
def job(x: int) -> None: ...
