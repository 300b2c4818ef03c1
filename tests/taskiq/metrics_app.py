"""The app of tests/taskiq/test_metrics_worker.py: ``taskiq worker tests.taskiq.metrics_app:broker``
exposing cachify's metrics as docs/METRICS.md ("Taskiq") tells users to.

Taskiq's own ``PrometheusMiddleware`` switches prometheus_client to multiprocess mode (its
``metrics_path``) and serves ``/metrics`` from the first worker process on ``server_port``
(9000 unless given; here ``CACHIFY_TASKIQ_METRICS_PORT``, and the directory from
``CACHIFY_TASKIQ_METRICS_DIR``); cachify's metrics are enabled at ``WORKER_STARTUP``, so they
land in the same files. Redis as in worker_app.py (stream broker db 1, results db 2, cachify db
0, observations under ``obs:*`` in db 0), with its own stream and key prefix.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from pathlib import Path
from typing import Any

import redis.asyncio as aredis
from taskiq import TaskiqEvents, TaskiqState
from taskiq.middlewares.prometheus_middleware import PrometheusMiddleware
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from cachify_core import init_cachify
from cachify_core.metrics import enable_prometheus
from cachify_taskiq import CachifyMiddleware

BASE_URL = os.environ["CACHIFY_TASKIQ_REDIS"].rstrip("/")
QUEUE = "cachify-taskiq-metrics-tests"
PREFIX = "TQM-"
PORT_ENV, DIR_ENV = "CACHIFY_TASKIQ_METRICS_PORT", "CACHIFY_TASKIQ_METRICS_DIR"


def db_url(db: int) -> str:
    return f"{BASE_URL}/{db}"


cachify = init_cachify(url=db_url(0), prefix=PREFIX, is_global=False)
broker = (
    RedisStreamBroker(db_url(1), queue_name=QUEUE)
    .with_result_backend(RedisAsyncResultBackend(db_url(2), result_ex_time=600))
    .with_middlewares(
        # -- what docs/METRICS.md tells Taskiq users to add (with the port and directory given)
        PrometheusMiddleware(
            metrics_path=Path(os.environ[DIR_ENV]), server_port=int(os.environ.get(PORT_ENV, "9000"))
        ),
        CachifyMiddleware(cachify=cachify),
    )
)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _enable_metrics(state: TaskiqState) -> None:
    enable_prometheus()


# -----------------------------------------------------------------------------------------------
_async_obs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def obs() -> Any:
    loop = asyncio.get_running_loop()
    client = _async_obs.get(loop)
    if client is None:
        client = _async_obs[loop] = aredis.Redis.from_url(db_url(0))
    return client


@broker.task(once_key="m-once-{n}", once_mode="running")
async def once_job(n: int, seconds: float) -> int:
    await obs().rpush("obs:ran:once_job", n)
    await asyncio.sleep(seconds)
    return n


@broker.task(pool_key="m-pool", pool_max_size=1)
async def pool_job(n: int, seconds: float) -> int:
    await obs().rpush("obs:ran:pool_job", n)
    await asyncio.sleep(seconds)
    return n


@broker.task(cache_key="m-square-{n}")
async def square(n: int) -> int:
    await obs().rpush("obs:ran:square", n)
    return n * n
