"""A Taskiq app using cachify's task options: run it with real workers.

    cd examples/taskiq
    taskiq worker app:broker --workers 2     # terminal 1
    python kick.py                           # terminal 2

Redis: ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) names the server: the stream broker
on database 1, results on 2, cachify on 0, every cachify key under the prefix ``cachify-example:``.
"""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import urlsplit, urlunsplit

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from cachify_core import init_cachify
from cachify_taskiq import CachifyMiddleware

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def database(db: int) -> str:
    """``REDIS_URL`` with its database number set to ``db``."""
    parts = urlsplit(REDIS_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


broker = (
    RedisStreamBroker(database(1), queue_name="cachify-example")
    .with_result_backend(RedisAsyncResultBackend(database(2), result_ex_time=3600))
    .with_middlewares(CachifyMiddleware())
)
init_cachify(url=database(0), prefix="cachify-example:")


#: A short backoff, so a task that found the pool full comes back soon after a slot frees (each
#: requeue is one more message through the broker; production pools may well wait longer).
ERP_BACKOFF_S = (0.05, 0.25)


@broker.task(once_key="sync-{order_id}", pool_key="erp", pool_max_size=4, pool_backoff=ERP_BACKOFF_S)
async def sync_order(order_id: int) -> dict[str, float | int]:
    """At most one queued or running sync per order, at most 4 talking to the ERP at once."""
    started = time.time()
    await asyncio.sleep(1.0)  # the ERP call
    return {"order_id": order_id, "started": started, "ended": time.time(), "pid": os.getpid()}


@broker.task(cache_key="rate-{currency}", cache_ttl=60)
def exchange_rate(currency: str) -> float:
    """A sync task: the first call computes, the next ones within a minute are cache hits."""
    time.sleep(0.5)  # a slow lookup
    return {"EUR": 1.08, "GBP": 1.27}.get(currency, 1.0)
