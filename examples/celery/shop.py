# mypy: disable-error-code="untyped-decorator"
# (celery ships no type information, so every @app.task is an untyped decorator)
"""The example shop: a Celery app whose tasks use cachify's task options.

Start a worker from this directory (see README.md next to this file)::

    celery -A shop worker --pool=prefork --concurrency=4 --loglevel=INFO

then run ``python demo.py`` next to it. Redis: ``REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) names the server; database 0 holds cachify's keys (prefix
``shop-demo-``), 1 the broker, 2 the results.
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from celery import Celery

from cachify_celery import REQUEUES_HEADER, CachifyTask
from cachify_core import init_cachify, pooled

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def database(db: int) -> str:
    """``REDIS_URL`` with its database number set to ``db``."""
    parts = urlsplit(REDIS_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


app = Celery("shop", broker=database(1), backend=database(2), task_cls=CachifyTask)
app.conf.update(worker_prefetch_multiplier=1, result_expires=3600)
cachify = init_cachify(url=database(0), prefix="shop-demo-")


@app.task(once_key="check-order-{order_id}")
def check_order(order_id: int) -> dict[str, Any]:
    """However often it is sent while one is queued or running, one check runs."""
    time.sleep(2)
    return {"order_id": order_id, "checked_by": os.getpid()}


@app.task(bind=True, pool_key="stripe", pool_max_size=3, pool_backoff=(0.2, 2))
def charge(self: Any, customer_id: str, cents: int) -> dict[str, Any]:
    """At most 3 charges at once across every worker; the rest wait in the pool's waiting room
    (in Redis, not in a worker) and each freed slot is handed to the oldest of them. With 4
    worker children, one is always left over: its charge finds the pool full and waits."""
    started = time.time()
    time.sleep(0.5)
    requeues = (self.request.headers or {}).get(REQUEUES_HEADER, 0)
    return {"cents": cents, "started": started, "ended": time.time(), "requeues": requeues}


@app.task(cache_key="report-{day}", cache_ttl=3600)
def build_report(day: str) -> dict[str, Any]:
    """Computed once per day; later calls are answered from the cache, without running."""
    time.sleep(1)
    return {"day": day, "built_at": time.time()}


@app.task
@pooled(key="geocoder", max_size=1, raise_on_full=True)
def geocode(address: str) -> str:
    """A plain ``@pooled`` stacked under ``@app.task``: a full pool requeues the task."""
    time.sleep(0.3)
    return f"{address}: 48.85, 2.35"
