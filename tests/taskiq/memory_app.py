"""A worker app that makes the mistake the shared-store check is for: ``init_cachify()`` (the
embedded in-memory backend) with a broker whose workers are other processes. Its worker must
refuse to start: ``taskiq worker tests.taskiq.memory_app:broker``.
"""

from __future__ import annotations

import os

from taskiq_redis import ListQueueBroker

from cachify_core import init_cachify
from cachify_taskiq import CachifyMiddleware

broker = ListQueueBroker(
    f"{os.environ['CACHIFY_TASKIQ_REDIS'].rstrip('/')}/1", queue_name="cachify-taskiq-memory-app"
).with_middlewares(CachifyMiddleware())
init_cachify()


@broker.task(once_key="order-{order_id}")
async def sync_order(order_id: int) -> int:
    return order_id
