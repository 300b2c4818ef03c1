"""A Dramatiq app using cachify's task options.

Start the workers from this directory (see README.md next to this file)::

    dramatiq app --processes 2 --threads 4

then send messages with ``python enqueue.py``. Redis: ``REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) names the server; database 1 holds the broker and the results,
database 0 cachify's keys.
"""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import urlsplit, urlunsplit

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, CurrentMessage
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from cachify_core import init_cachify
from cachify_dramatiq import REQUEUES_OPTION, CachifyMiddleware

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def database(db: int) -> str:
    """``REDIS_URL`` with its database number set to ``db``."""
    parts = urlsplit(REDIS_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


broker = RedisBroker(url=database(1))  # type: ignore[no-untyped-call]
broker.add_middleware(CachifyMiddleware())  # before any actor is declared
broker.add_middleware(AsyncIO())  # for the async actor below
broker.add_middleware(CurrentMessage())  # lets sync_order report how often it was requeued
broker.add_middleware(Results(backend=RedisBackend(url=database(1))))  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)
init_cachify(url=database(0), prefix="example-")


# One sync per order at a time (a second send() while it is queued or running returns the
# first one's handle), and at most 4 calls into the ERP at once across every worker: with
# 2 processes x 4 threads, 4 worker threads at a time find the pool full and requeue.
@dramatiq.actor(
    once_key="sync-{order_id}",
    pool_key="erp",
    pool_max_size=4,
    pool_backoff=(0.1, 1),
    store_results=True,
)
def sync_order(order_id: int) -> dict[str, float | int]:
    started = time.time()
    time.sleep(0.5)  # the ERP is slow
    message = CurrentMessage.get_current_message()
    requeues = 0 if message is None else int(message.options.get(REQUEUES_OPTION) or 0)
    return {
        "order_id": order_id,
        "pid": os.getpid(),
        "started": started,
        "ended": time.time(),
        "requeues": requeues,
    }


# Computed once per day and kept 10 minutes: later messages get the stored report as their
# result without running.
@dramatiq.actor(cache_key="report-{day}", cache_ttl=600, store_results=True)
def daily_report(day: str) -> dict[str, object]:
    time.sleep(1.0)
    return {"day": day, "orders": 1234, "computed_at": time.strftime("%H:%M:%S")}


# Async actors work the same way; "until_started" lets one refresh wait while another runs.
@dramatiq.actor(once_key="refresh-{user_id}", once_mode="until_started", store_results=True)
async def refresh_profile(user_id: int) -> str:
    await asyncio.sleep(0.3)
    return f"profile {user_id} refreshed"
