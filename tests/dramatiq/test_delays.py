"""A delayed message a Redis consumer holds when its broker restarts runs after the restart
(:mod:`cachify_dramatiq.delays`; without it Dramatiq drops it from memory and it waits in the
live worker's acknowledgement set until the worker restarts, dramatiq#527).

A real, durable private ``redis-server`` as the broker, SIGKILLed and started again on the same
port with its data, and an in-process ``dramatiq.Worker``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from queue import PriorityQueue
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.worker import ConsumerThread

from cachify_core import init_cachify
from cachify_dramatiq import CachifyMiddleware
from cachify_dramatiq.delays import keep

from ..servers import PrivateServer, require_server_binary

#: The message's delay: long enough to be held by the delay-queue consumer across the restart.
DELAY_MS = 4000
#: How long the broker stays down: longer than redis-py's own reconnect attempts.
DOWN_S = 2.0


def _held_delayed(client: redis.Redis, namespace: str) -> int:
    """Messages the delay queue's consumer holds (its acknowledgement set)."""
    return sum(int(client.scard(k)) for k in client.scan_iter(f"{namespace}:__acks__.*.DQ"))


def _wait(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # bounded in time
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def test_a_delayed_message_held_across_a_broker_restart_runs_after_it(caplog: Any) -> None:
    server = PrivateServer(require_server_binary(), extra=("--appendonly", "yes", "--appendfsync", "always"))
    server.start()
    namespace = f"delays-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=server.url, namespace=namespace)  # type: ignore[no-untyped-call]
    cachify = init_cachify(url=server.url, is_global=False)
    broker.add_middleware(CachifyMiddleware(cachify=cachify))
    ran = threading.Event()

    @dramatiq.actor(broker=broker, actor_name=f"later_{namespace}", max_retries=0)
    def later() -> None:
        ran.set()

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    probe = redis.Redis.from_url(server.url)
    try:
        later.send_with_options(delay=DELAY_MS)
        assert _wait(lambda: _held_delayed(probe, namespace) == 1, 5.0), "the delay consumer never took it"
        probe.close()
        with caplog.at_level(logging.WARNING, logger="cachify"):
            server.kill()
            time.sleep(DOWN_S)
            server.start()  # same port and data: the message is still in the acknowledgement set
            # Dramatiq restarts its consumer 3 s after the error; the message is due 4 s after
            # it was sent: it runs within a few seconds of both.
            assert ran.wait(15.0), "the delayed message held across the restart never ran"
        messages = [r.getMessage() for r in caplog.records]
        assert any("lost its broker connection holding 1 delayed message" in m for m in messages)
        assert any("requeued 1 delayed message" in m for m in messages)
        probe = redis.Redis.from_url(server.url)
        assert _wait(lambda: _held_delayed(probe, namespace) == 0, 5.0)
    finally:
        worker.stop()
        broker.close()
        probe.close()
        server.stop()


def test_a_due_message_whose_enqueue_fails_is_kept_and_enqueued_once_the_broker_is_back() -> None:
    # The consumer thread's own steps, driven here on a real broker: Dramatiq's would take the
    # message out of memory and raise redis-py's error (its consumer thread then dies in close()).
    server = PrivateServer(require_server_binary(), extra=("--appendonly", "yes", "--appendfsync", "always"))
    server.start()
    namespace = f"delays-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=server.url, namespace=namespace)  # type: ignore[no-untyped-call]
    broker.add_middleware(CachifyMiddleware(cachify=init_cachify(url=server.url, is_global=False)))

    @dramatiq.actor(broker=broker, actor_name=f"due_{namespace}", max_retries=0)
    def due() -> None: ...

    delayed = dq_name(due.queue_name)
    thread = ConsumerThread(
        broker=broker, queue_name=delayed, prefetch=1, work_queue=PriorityQueue(), worker_timeout=100
    )
    keep(thread)
    probe = redis.Redis.from_url(server.url)
    try:
        due.send_with_options(delay=1)
        thread.consumer = broker.consume(delayed, prefetch=1, timeout=100)
        message = None
        for _ in range(50):  # bounded: the message is there at once
            message = next(thread.consumer)
            if message is not None:
                break
        assert message is not None
        thread.handle_message(message)  # held in memory until its ETA, 1 ms after the send
        time.sleep(0.05)
        server.kill()
        with pytest.raises(ConnectionClosed):
            thread.handle_delayed_messages()
        assert thread.delay_queue.qsize() == 1  # kept, not lost from memory
        server.start()
        thread.consumer = broker.consume(delayed, prefetch=1, timeout=100)  # as Dramatiq's restart
        thread.handle_delayed_messages()
        assert thread.delay_queue.qsize() == 0
        assert probe.llen(f"{namespace}:{due.queue_name}") == 1  # enqueued on its queue
        assert _held_delayed(probe, namespace) == 0  # and acknowledged off the delay queue
    finally:
        broker.close()
        probe.close()
        server.stop()


@pytest.fixture(autouse=True)
def _no_global_broker() -> Any:
    previous = dramatiq.get_broker() if dramatiq.broker.global_broker is not None else None
    yield
    if previous is not None:
        dramatiq.set_broker(previous)
