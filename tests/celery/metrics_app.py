# mypy: disable-error-code="untyped-decorator"
# (celery ships no type information, so every @app.task is an untyped decorator)
"""The app of tests/celery/test_metrics_worker.py: a prefork ``celery worker`` exposing cachify's
metrics as docs/METRICS.md ("Celery") tells users to.

prometheus_client's multiprocess mode: the worker is started with ``PROMETHEUS_MULTIPROC_DIR``
(an empty directory) in its environment; every prefork child enables cachify's metrics
(``worker_process_init``), and the main process serves all children's files on one port
(``worker_init``; the port comes from ``CACHIFY_CELERY_METRICS_PORT`` here, 9200 in the docs).
Tasks note their runs in the observations database (``ran:<task>``), as worker_app.py does.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_init, worker_process_init

from cachify_celery import install
from cachify_core import init_cachify
from cachify_core.metrics import enable_prometheus

from .support import REDIS_ENV, RedisDbs

#: The port the main worker process serves /metrics on (the test picks a free one).
PORT_ENV = "CACHIFY_CELERY_METRICS_PORT"
#: The queue this app's worker consumes (other test modules' workers are not on it).
QUEUE = "metrics"

_base = os.environ.get(REDIS_ENV)
if not _base:
    raise RuntimeError(f"{REDIS_ENV} is not set: this app is started by tests/celery/test_metrics_worker.py")
DBS = RedisDbs(_base)

cachify = init_cachify(url=DBS.cachify, prefix="CM-", is_global=False)
app = Celery("cachify_celery_metrics", broker=DBS.broker, backend=DBS.backend)
install(app, cachify=cachify)
app.conf.update(
    worker_prefetch_multiplier=1,
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue=QUEUE,
)
observe = redis.Redis.from_url(DBS.observe)


# -- what docs/METRICS.md tells Celery users to add --------------------------------------------
@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    import prometheus_client
    from prometheus_client import multiprocess

    registry = prometheus_client.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    prometheus_client.start_http_server(int(os.environ.get(PORT_ENV, "9200")), registry=registry)


@worker_process_init.connect
def _enable_metrics(**_: Any) -> None:
    enable_prometheus()


# -- the known work ----------------------------------------------------------------------------
@app.task(shared=False)
def hello(name: str) -> str:
    """Readiness probe."""
    return f"hello {name}"


@app.task(shared=False, once_key="m-once-{n}", once_mode="running")
def once_job(n: int, seconds: float) -> int:
    observe.rpush("ran:once_job", n)
    time.sleep(seconds)
    return n


@app.task(shared=False, once_key="m-sent-{n}")
def sent_once(n: int, seconds: float) -> int:
    """Queued mode (the default): duplicates are refused at send, in the sending process."""
    observe.rpush("ran:sent_once", n)
    time.sleep(seconds)
    return n


@app.task(shared=False, pool_key="m-pool", pool_max_size=1, acks_late=True)
def pool_job(n: int, seconds: float) -> int:
    observe.rpush("ran:pool_job", n)
    time.sleep(seconds)
    return n


@app.task(shared=False, cache_key="m-square-{n}", cache_ttl=60)
def square(n: int) -> int:
    observe.rpush("ran:square", n)
    return n * n
