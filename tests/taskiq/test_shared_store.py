"""The embedded in-memory backend coordinates one process: with a broker whose workers are
other processes it is refused at ``kiq`` and at worker startup, loudly; with an
``InMemoryBroker`` (workers in this process) it is fine."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis
from taskiq_redis import ListQueueBroker

from cachify_core import Cachify, CachifyInitError
from cachify_taskiq import CachifyMiddleware

from .conftest import ROOT, stop_process_group

pytestmark = pytest.mark.timeout(60)

#: Seconds ``taskiq worker --max-fails 1`` may take to start, fail and exit.
WORKER_EXIT_S = 30.0


@pytest.fixture
async def list_broker(redis_base_url: str) -> AsyncIterator[tuple[ListQueueBroker, Any]]:
    """A ListQueueBroker on the test Redis (db 1, a queue of its own), cachify on the memory backend."""
    queue = f"cachify-memory-{uuid.uuid4().hex[:8]}"
    broker = ListQueueBroker(f"{redis_base_url}/1", queue_name=queue).with_middlewares(
        CachifyMiddleware(cachify=Cachify())
    )
    client = aredis.Redis.from_url(f"{redis_base_url}/1")
    try:
        yield broker, (client, queue)
    finally:
        await client.delete(queue)
        await client.aclose()
        await broker.shutdown()


async def test_memory_backend_with_another_process_broker_raises_at_kiq(
    list_broker: tuple[ListQueueBroker, Any],
) -> None:
    broker, (client, queue) = list_broker

    @broker.task("orders:sync", once_key="order-{order_id}")
    async def sync_order(order_id: int) -> None: ...

    @broker.task("orders:capped", pool_key="erp", pool_max_size=2)
    async def capped(order_id: int) -> None: ...

    @broker.task("orders:plain")
    async def plain(order_id: int) -> None: ...

    await broker.startup()
    for task in (sync_order, capped):
        with pytest.raises(CachifyInitError) as caught:
            await task.kiq(1)
        assert task.task_name in str(caught.value)
        assert "init_cachify(url=" in str(caught.value)
        assert "in-memory" in str(caught.value)
    with pytest.raises(CachifyInitError):  # an override turning a feature on counts too
        await plain.kicker().with_labels(cache_key="c-{order_id}").kiq(1)
    assert await client.llen(queue) == 0  # nothing was sent

    await plain.kiq(1)  # no option: nothing to coordinate
    assert await client.llen(queue) == 1


async def test_memory_backend_refuses_a_worker_startup(list_broker: tuple[ListQueueBroker, Any]) -> None:
    broker, _ = list_broker

    @broker.task("orders:sync", once_key="order-{order_id}")
    async def sync_order(order_id: int) -> None: ...

    await broker.startup()  # a sender that never sends a task with options is left alone
    broker.is_worker_process = True
    with pytest.raises(CachifyInitError, match="orders:sync"):
        await broker.startup()


def test_a_taskiq_worker_on_the_memory_backend_exits_with_the_error(redis_base_url: str) -> None:
    """``taskiq worker`` restarts a child that dies; with ``--max-fails 1`` the command exits,
    and the child's error is in its output."""
    env = {**os.environ, "CACHIFY_TASKIQ_REDIS": redis_base_url, "PYTHONPATH": str(ROOT)}
    taskiq = Path(sys.executable).with_name("taskiq")
    command = [str(taskiq), "worker", "tests.taskiq.memory_app:broker", "--workers", "1", "--max-fails", "1"]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=WORKER_EXIT_S)
    finally:
        stop_process_group(proc)
    output = out.decode(errors="replace")
    assert proc.returncode != 0
    assert "CachifyInitError" in output
    assert "tests.taskiq.memory_app:sync_order" in output
    assert "init_cachify(url=" in output
    assert "Listening started" not in output
