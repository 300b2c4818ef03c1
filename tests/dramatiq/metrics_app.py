"""The app of tests/dramatiq/test_metrics_worker.py: ``dramatiq tests.dramatiq.metrics_app:broker``
exposing cachify's metrics as docs/METRICS.md ("Dramatiq") tells users to.

Dramatiq's own ``Prometheus`` middleware serves ``/metrics`` from a forked process on
``dramatiq_prom_port`` (9191 unless set; the test picks a free one) out of prometheus_client's
multiprocess files in ``dramatiq_prom_db``; a small middleware enables cachify's metrics in each
worker process after boot, so they land in the same files. Redis, databases and observations
as in worker_app.py (``CACHIFY_DRAMATIQ_TEST_REDIS_URL``; broker db 1, cachify db 0,
observations db 2), with its own key prefix and queue.
"""

from __future__ import annotations

import functools
import os
import time
from urllib.parse import urlsplit, urlunsplit

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.prometheus import Prometheus
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend
from dramatiq.worker import Worker

from cachify_core import init_cachify
from cachify_core.metrics import enable_prometheus
from cachify_dramatiq import CachifyMiddleware

REDIS_URL_ENV = "CACHIFY_DRAMATIQ_TEST_REDIS_URL"
BROKER_DB, CACHIFY_DB, OBSERVATIONS_DB = 1, 0, 2
QUEUE = "metrics"


def with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


BASE_URL = os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0")

broker = RedisBroker(url=with_db(BASE_URL, BROKER_DB))  # type: ignore[no-untyped-call]
cachify = init_cachify(url=with_db(BASE_URL, CACHIFY_DB), is_global=False, prefix="dqm-")
results = RedisBackend(url=with_db(BASE_URL, BROKER_DB))


# -- what docs/METRICS.md tells Dramatiq users to add ------------------------------------------
class CachifyMetrics(dramatiq.Middleware):
    """Enables cachify's Prometheus metrics in each worker process (after dramatiq's
    Prometheus middleware has switched prometheus_client to multiprocess mode at boot)."""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Worker) -> None:
        enable_prometheus()


broker.add_middleware(Prometheus())  # type: ignore[no-untyped-call]
broker.add_middleware(CachifyMetrics())
# -----------------------------------------------------------------------------------------------
broker.add_middleware(CachifyMiddleware(cachify=cachify))
broker.add_middleware(CurrentMessage())
broker.add_middleware(Results(backend=results))  # type: ignore[no-untyped-call]


@functools.cache
def observations() -> redis.Redis:
    return redis.Redis.from_url(with_db(BASE_URL, OBSERVATIONS_DB))


@dramatiq.actor(broker=broker, queue_name=QUEUE)
def ping(token: str) -> None:
    observations().rpush("ping", f"{token}:{os.getpid()}")


@dramatiq.actor(broker=broker, queue_name=QUEUE, once_key="m-once-{n}", once_mode="running", max_retries=0)
def once_job(n: int, seconds: float) -> None:
    observations().rpush("ran:once_job", n)
    time.sleep(seconds)


@dramatiq.actor(broker=broker, queue_name=QUEUE, pool_key="m-pool", pool_max_size=1, max_retries=0)
def pool_job(n: int, seconds: float) -> None:
    observations().rpush("ran:pool_job", n)
    time.sleep(seconds)


@dramatiq.actor(broker=broker, queue_name=QUEUE, cache_key="m-square-{n}", store_results=True)
def square(n: int) -> int:
    observations().rpush("ran:square", n)
    return n * n
