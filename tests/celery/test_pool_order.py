"""A prefork worker's wait for a free child takes hand-overs first: real messages (Celery's
in-memory transport), real worker ``Request`` objects, kombu's own ``LaxBoundedSemaphore``,
as the event-loop worker uses them."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

from celery import Celery
from celery.worker.request import Request
from kombu.asynchronous.semaphore import LaxBoundedSemaphore

from cachify_celery import pool_order
from cachify_celery.room import publish_handovers

from .test_front import parked


def received(sends: list[str]) -> tuple[Celery, list[Request]]:
    """Publish newcomers ("n…") and hand-overs ("h…") in ``sends`` order; the worker's Requests
    for them, in the order it receives them."""
    app = Celery(f"order-{uuid.uuid4().hex[:6]}", broker="memory://", set_as_current=False)

    @app.task(name="front.work", shared=False)
    def work(x: int) -> int:
        return x

    requests = []
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue(app.conf.task_default_queue)
        try:
            for task_id in sends:
                if task_id.startswith("h"):
                    assert publish_handovers(app, [parked(app, task_id)]) == 1
                else:
                    app.send_task("front.work", args=(1,), task_id=task_id)
            for _ in sends:
                requests.append(Request(queue.get(timeout=5), app=app, task=work))
        finally:
            queue.close()
    return app, requests


def dispatch_order(requests: list[Request], ordered: bool) -> list[str]:
    """Each request waits for the one busy child; the order they get it in, one at a time."""
    semaphore = LaxBoundedSemaphore(1)
    if ordered:
        assert pool_order.install(SimpleNamespace(semaphore=semaphore))
        assert pool_order.install(SimpleNamespace(semaphore=semaphore))  # idempotent
    started: list[str] = []
    assert semaphore.acquire(lambda: None)  # the child is busy
    for request in requests:
        assert not semaphore.acquire(lambda r: started.append(r.id), request)
    for _ in requests:
        semaphore.release()
    return started


def test_hand_overs_get_the_next_free_child_in_their_order() -> None:
    sends = ["n0", "n1", "h0", "n2", "h1", "n3"]
    app, requests = received(sends)
    try:
        assert [pool_order.is_handover(r) for r in requests] == [s.startswith("h") for s in sends]
        assert dispatch_order(requests, ordered=False) == sends  # Celery's own: arrival order
        assert dispatch_order(requests, ordered=True) == ["h0", "h1", "n0", "n1", "n2", "n3"]
    finally:
        app.close()


def test_pools_without_that_wait_are_left_alone() -> None:
    assert not pool_order.install(None)
    assert not pool_order.install(SimpleNamespace(semaphore=None))  # threads, solo: no semaphore
