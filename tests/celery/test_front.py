"""Hand-overs on a Redis broker go to the consuming end of the queue, ahead of its backlog, and
a batch of them is consumed oldest first; other publishes, and other brokers, are untouched."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import serialization

from cachify_celery import front
from cachify_celery.room import FRAMEWORK, publish_handovers
from cachify_core.backends.base import Handover
from cachify_core.tasks import handover

from .support import RedisDbs


@pytest.fixture
def app(redis_dbs: RedisDbs) -> Iterator[Celery]:
    app = Celery(f"front-{uuid.uuid4().hex[:6]}", broker=redis_dbs.broker, set_as_current=False)
    app.conf.task_default_queue = f"front-{uuid.uuid4().hex[:8]}"
    try:
        yield app
    finally:
        with contextlib.closing(redis.Redis.from_url(redis_dbs.broker)) as client:
            client.delete(app.conf.task_default_queue)
        app.close()


def queued(app: Celery, redis_dbs: RedisDbs) -> list[str]:
    """The task ids in the app's queue, in the order workers take them (BRPOP: the right end)."""
    with contextlib.closing(redis.Redis.from_url(redis_dbs.broker)) as client:
        raw = client.lrange(app.conf.task_default_queue, 0, -1)
    return [json.loads(m)["headers"]["id"] for m in reversed(raw)]


def parked(app: Celery, task_id: str) -> Handover:
    """A hand-over as the waiting room returns it (the payload parked_payload makes)."""
    signature = app.signature("front.work", args=(1,), options={"task_id": task_id})
    content_type, encoding, data = serialization.dumps(dict(signature), "json")  # type: ignore[no-untyped-call]
    body = data if isinstance(data, bytes) else data.encode(encoding)
    return Handover(f"entry-{task_id}", handover.payload(FRAMEWORK, content_type.encode() + b"\n" + body))


def test_a_hand_over_is_taken_before_the_backlog(app: Celery, redis_dbs: RedisDbs) -> None:
    assert front.install()
    for n in range(3):
        app.send_task("front.work", args=(n,), task_id=f"backlog-{n}")
    assert publish_handovers(app, [parked(app, "handed")]) == 1
    app.send_task("front.work", args=(9,), task_id="later")  # an ordinary publish: at the far end
    assert queued(app, redis_dbs) == ["handed", "backlog-0", "backlog-1", "backlog-2", "later"]


def test_a_batch_of_hand_overs_is_taken_oldest_first(app: Celery, redis_dbs: RedisDbs) -> None:
    app.send_task("front.work", args=(0,), task_id="backlog")
    handed = [parked(app, "oldest"), parked(app, "middle"), parked(app, "newest")]
    assert publish_handovers(app, handed) == 3
    assert queued(app, redis_dbs) == ["oldest", "middle", "newest", "backlog"]


def test_at_front_only_while_inside_and_only_for_this_thread(app: Celery, redis_dbs: RedisDbs) -> None:
    assert front.install()
    app.send_task("front.work", args=(0,), task_id="first")
    with front.at_front():
        with front.at_front():  # nested: still at the front after the inner one ends
            pass
        app.send_task("front.work", args=(1,), task_id="front")
    app.send_task("front.work", args=(2,), task_id="back")
    assert queued(app, redis_dbs) == ["front", "first", "back"]


def test_other_brokers_publish_hand_overs_the_ordinary_way() -> None:
    app = Celery(f"front-mem-{uuid.uuid4().hex[:6]}", broker="memory://", set_as_current=False)
    sent: list[Any] = []
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue(app.conf.task_default_queue)
        try:
            assert publish_handovers(app, [parked(app, "a"), parked(app, "b")]) == 2
            for _ in range(2):
                sent.append(queue.get(timeout=5).headers["id"])
        finally:
            queue.close()
    assert sent == ["a", "b"]  # in order, as published
    app.close()
