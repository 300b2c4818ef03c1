# mypy: disable-error-code="untyped-decorator"
# (celery ships no type information, so every @app.task is an untyped decorator)
"""A publish that fails must neither lose the task silently nor leave its hold behind."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from cachify_celery import CachifyTask
from cachify_celery.requeue import publish_requeue
from cachify_core import Cachify
from cachify_core.tasks import Delivery, State

from ..servers import free_port
from .support import hold_holder

pytestmark = pytest.mark.timeout(30)


def test_a_failed_send_gives_the_hold_back(cachify_global: Cachify) -> None:
    broker = f"redis://127.0.0.1:{free_port()}/0"
    app = Celery("unreachable", broker=broker, set_as_current=False, task_cls=CachifyTask)
    app.conf.update(broker_connection_retry=False, task_publish_retry=False)
    # fail at once instead of after kombu's default reconnection schedule (~6 s)
    app.conf.broker_transport_options = {"max_retries": 1, "interval_start": 0, "interval_step": 0.05}

    @app.task(shared=False, once_key="order-{order_id}")
    def check_order(order_id: int) -> None: ...

    with pytest.raises(Exception):  # noqa: B017  # kombu's OperationalError, whichever
        check_order.delay(1)
    assert hold_holder(check_order, 1) is None


def test_a_failed_requeue_gives_the_hold_back_and_raises(cachify_global: Cachify) -> None:
    app = Celery("eager", set_as_current=False, task_cls=CachifyTask)
    app.conf.task_always_eager = True

    @app.task(shared=False, once_key="order-{order_id}", pool_key="p", pool_max_size=1)
    def check_order(order_id: int) -> None: ...

    policy = check_order._cachify_policies.declared
    assert not policy.claim("task-1", (1,), {}).duplicate
    assert hold_holder(check_order, 1) == "task-1"

    class Unpublishable:
        name = "unpublishable"

        def signature_from_request(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("broker down")

    request = SimpleNamespace(id="task-1", headers=None)
    delivery = Delivery(policy, "task-1", (1,), {}, requeues=1)
    delivery.state = State.REQUEUING  # as an admission that found the pool full leaves it
    with pytest.raises(ConnectionError):
        publish_requeue(Unpublishable(), request, delivery)
    assert delivery.state is State.ENDED
    assert hold_holder(check_order, 1) is None
