"""Requeue after a backoff: the fallback where a full pool cannot park its task.

Where nothing can park — a store without waiting rooms, a room at ``pool_max_waiting``, a
``CachifyPoolFullError`` escaping the body, a store outage — the message is rebuilt from the
running request (``signature_from_request``, as ``Task.retry`` does) with ``countdown`` set to
the delivery's backoff and the requeue count in its header (and, deferred by a store error, the
name it asked the store under: ``Delivery.copy_fields``), while ``retries`` stays as it was.
The caller then raises ``Ignore`` so the current message is acknowledged after the new one was
published: a crash in between can run the task twice, never lose it. (A full pool normally
parks the task in its waiting room: :mod:`.room`.)
"""

from __future__ import annotations

from typing import Any

from cachify_core.tasks import Delivery

__all__ = ["publish_requeue"]


def publish_requeue(task: Any, request: Any, delivery: Delivery) -> None:
    """Publish the next requeue of the running delivery, due after the delivery's backoff.

    The copy keeps the reservation it carries, if any (a hand-over deferred by a store outage
    claims its reserved slot when it comes back). If the publish fails, nothing will run under
    the task id any more: the delivery gives its hold back and the error propagates, so Celery
    records the failure instead of the task vanishing.
    """
    decision = delivery.decision
    delay_s = 0.0 if decision is None else decision.delay_s
    headers = dict(request.headers or {})
    headers.update(delivery.copy_fields())  # requeues + 1 (and, after a store error, its origin)
    try:
        signature = task.signature_from_request(
            request, delivery.args, delivery.kwargs, countdown=delay_s, headers=headers
        )
        signature.apply_async()
    except BaseException:
        delivery.requeue_failed()
        raise
    delivery.requeue_published()
