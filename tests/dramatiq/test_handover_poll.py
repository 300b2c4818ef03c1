"""A Redis consumer of a queue whose actors can park in a waiting room polls its (mostly
empty) queue every ``handover_poll_ms`` at the longest, and at once after a hand-over published
in its own process; other queues and delay queues keep ``dramatiq_worker_timeout``."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker

from cachify_core import init_cachify
from cachify_dramatiq import CachifyMiddleware, CachifySetupError
from cachify_dramatiq.polling import polled_every_ms


@pytest.fixture
def redis_broker(redis_url: str) -> Iterator[RedisBroker]:
    broker = RedisBroker(url=redis_url, namespace=f"poll-{uuid.uuid4().hex[:8]}")  # type: ignore[no-untyped-call]
    try:
        yield broker
    finally:
        broker.close()


def consumer_timeouts(broker: RedisBroker, middleware: CachifyMiddleware) -> dict[str, int]:
    broker.add_middleware(middleware)

    @dramatiq.actor(broker=broker, queue_name="pooled", pool_key="p", pool_max_size=1)
    def pooled() -> None: ...

    @dramatiq.actor(broker=broker, queue_name="limited", rate_key="r", rate="5/s")
    def limited() -> None: ...

    @dramatiq.actor(broker=broker, queue_name="plain")
    def plain() -> None: ...

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=1000)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        # each thread runs the boot hook, then makes its consumer: read the timeouts after that
        while not all(t.consumer is not None for t in worker.consumers.values()):
            assert time.monotonic() < deadline, "consumer threads did not start within 10 s"
            time.sleep(0.01)
        return {name: polled_every_ms(thread.consumer) for name, thread in worker.consumers.items()}
    finally:
        worker.stop()


def test_queues_of_waiting_room_actors_are_polled_every_handover_poll_ms(
    redis_broker: RedisBroker, redis_url: str
) -> None:
    c = init_cachify(url=redis_url, prefix=f"poll-{uuid.uuid4().hex[:6]}-", is_global=False)
    timeouts = consumer_timeouts(redis_broker, CachifyMiddleware(cachify=c))
    assert timeouts == {
        "pooled": 10,
        "pooled.DQ": 1000,
        "limited": 10,
        "limited.DQ": 1000,
        "plain": 1000,
        "plain.DQ": 1000,
    }


def test_none_keeps_dramatiqs_own(redis_broker: RedisBroker, redis_url: str) -> None:
    c = init_cachify(url=redis_url, prefix=f"poll-{uuid.uuid4().hex[:6]}-", is_global=False)
    timeouts = consumer_timeouts(redis_broker, CachifyMiddleware(cachify=c, handover_poll_ms=None))
    assert set(timeouts.values()) == {1000}


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "10"])
def test_a_bad_handover_poll_ms_fails_naming_it(bad: object) -> None:
    with pytest.raises(CachifySetupError, match=r"handover_poll_ms=.*whole milliseconds >= 1, or None"):
        CachifyMiddleware(handover_poll_ms=bad)  # type: ignore[arg-type]


def test_a_hand_over_wakes_this_processs_consumer_at_once(redis_broker: RedisBroker, redis_url: str) -> None:
    """With a 5 s poll, each freed slot's hand-over still starts at once: the publish wakes
    the sleeping consumer. (Polling alone starts each 0-5 s after the slot frees: both within
    0.7 s by chance about once in 50 runs.)"""
    c = init_cachify(url=redis_url, prefix=f"poll-{uuid.uuid4().hex[:6]}-", is_global=False)
    redis_broker.add_middleware(CachifyMiddleware(cachify=c, handover_poll_ms=5_000))
    starts: list[float] = []

    @dramatiq.actor(broker=redis_broker, queue_name="woken", pool_key="w", pool_max_size=1)
    def woken() -> None:
        starts.append(time.monotonic())
        time.sleep(0.3)

    for _ in range(3):
        woken.send()
    worker = dramatiq.Worker(redis_broker, worker_threads=2, worker_timeout=5_000)
    worker.start()
    try:
        deadline = time.monotonic() + 15
        while len(starts) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(starts) == 3, f"{len(starts)} of 3 started within 15 s"
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert all(g < 1.0 for g in gaps), gaps  # 0.3 s of work, then the hand-over
    finally:
        worker.stop()
