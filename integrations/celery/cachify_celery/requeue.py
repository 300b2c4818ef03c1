"""Sending a task again: the waiting room's hand-overs, and the backoff requeue fallback.

Both rebuild the message from the running request (``signature_from_request``, as
``Task.retry`` does): same task id, same queue or exchange and routing key, same priority,
headers, links and canvas membership, ``retries`` untouched, the requeue count in its header.

* **Parking** (a full pool, the default): :func:`parked_payload` is that message, serialized
  with the task's serializer, which the pool's waiting room keeps in the store. The delivery is
  acknowledged (``Ignore``); nothing waits in the worker. Whoever frees a slot gets the payload
  back and :func:`publish_handover` publishes it at once, carrying the entry id as its
  reservation (``cachify_reservation`` header); a lost publish is made again by the sweep.
* **Backoff** (:func:`publish_requeue`), where nothing can park (a store without waiting rooms,
  a room at ``pool_max_waiting``, a ``CachifyPoolFullError`` escaping the body, a store outage):
  the message is published with ``countdown`` set to the delivery's backoff, then the caller
  raises ``Ignore`` so the current message is acknowledged after the new one was published: a
  crash in between can run the task twice, never lose it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kombu import serialization

from cachify_core.backends.base import Handover
from cachify_core.tasks import Delivery, handover

from .envelope import REQUEUES_HEADER, RESERVATION_HEADER

__all__ = ["FRAMEWORK", "parked_payload", "publish_handover", "publish_handovers", "publish_requeue"]

#: The name hand-over payloads are framed with (:func:`cachify_core.tasks.handover.payload`).
FRAMEWORK = "celery"


def parked_payload(
    task: Any, request: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], requeues: int
) -> bytes:
    """The message that publishes a delivery (``requeues`` before it) again from any worker, as
    the waiting room keeps it: the content type, a newline, and the signature serialized with
    the task's serializer."""
    headers = dict(request.headers or {})
    headers[REQUEUES_HEADER] = requeues + 1
    headers.pop(RESERVATION_HEADER, None)  # a new park gets a new entry id
    signature = task.signature_from_request(request, args, kwargs, headers=headers)
    serializer = task.serializer or task.app.conf.task_serializer
    content_type, encoding, data = serialization.dumps(dict(signature), serializer)  # type: ignore[no-untyped-call]
    body = data if isinstance(data, bytes) else data.encode(encoding)
    return handover.payload(FRAMEWORK, content_type.encode() + b"\n" + body)


def publish_handover(app: Any, entry_id: str, body: bytes) -> None:
    """Publish one hand-over: the parked signature, now carrying its reservation. It goes
    through ``send_task``, as a resend (its requeue header is set): its hold is refreshed,
    never refused."""
    content_type, _, data = body.partition(b"\n")
    loaded = serialization.loads(  # type: ignore[no-untyped-call]
        data, content_type.decode(), "binary", accept=[content_type.decode()]
    )
    signature = app.signature(loaded)
    options = signature.options
    options["headers"] = {**(options.get("headers") or {}), RESERVATION_HEADER: entry_id}
    signature.apply_async()


def publish_handovers(app: Any, handed: Sequence[Handover]) -> int:
    """Publish each Celery hand-over of ``handed``; a failure is logged and left to the sweep."""
    return handover.publish_all(
        FRAMEWORK, handed, lambda entry_id, body: publish_handover(app, entry_id, body)
    )


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
    headers[REQUEUES_HEADER] = delivery.requeues + 1
    try:
        signature = task.signature_from_request(
            request, delivery.args, delivery.kwargs, countdown=delay_s, headers=headers
        )
        signature.apply_async()
    except BaseException:
        delivery.requeue_failed()
        raise
    delivery.requeue_published()
