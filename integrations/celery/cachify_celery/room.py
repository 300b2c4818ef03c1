"""The waiting room's side of Celery: what a parked task leaves in the store, the publish of a
hand-over, and each worker process's sweep.

* :func:`parked_payload`: the message that publishes the delivery again from any worker, rebuilt
  from the running request (``signature_from_request``, as ``Task.retry`` does): same task id,
  queue or exchange and routing key, priority, headers, links and canvas membership,
  ``retries`` untouched, the ``cachify_requeues`` header + 1. Serialized with the task's
  serializer; the waiting room keeps it while the task waits, and the delivery is acknowledged
  (``Ignore``): nothing waits in the worker.
* :func:`publish_handover` / :func:`publish_handovers`: whoever frees a slot gets the payload
  back and publishes it at once through ``send_task`` (a resend: its hold is refreshed, never
  refused), carrying the entry id in the ``cachify_reservation`` header.
* :func:`ensure_sweeper` / :func:`start_for_app`: every process that runs cachify tasks sweeps
  the waiting rooms of its instances about once a second on cachify's renewal thread
  (:func:`cachify_core.tasks.handover.start_worker_sweeper`): a hand-over whose publish was
  lost is published again, a slot freed by expiry (a dead holder's) goes to the next parked
  task. One read a second while nothing waits. It starts when a worker is ready (main process:
  solo and threads pools run tasks there), when a prefork child starts, and otherwise on the
  first pooled delivery a process runs (an instance made later, e.g. by ``init_cachify`` in a
  ``worker_process_init`` handler that runs after cachify's).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kombu import serialization

from cachify_core.backends.base import Handover
from cachify_core.errors import CachifyInitError
from cachify_core.instance import Cachify
from cachify_core.tasks import handover

from .envelope import REQUEUES_HEADER, RESERVATION_HEADER

__all__ = [
    "FRAMEWORK",
    "ensure_sweeper",
    "parked_payload",
    "publish_handover",
    "publish_handovers",
    "start_for_app",
]

logger = logging.getLogger("cachify.celery")

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


def ensure_sweeper(app: Any, cachify: Cachify) -> None:
    """Sweep ``cachify``'s waiting rooms from this process (once per process and instance)."""
    handover.start_worker_sweeper(
        cachify, FRAMEWORK, lambda entry_id, body: publish_handover(app, entry_id, body)
    )


def start_for_app(app: Any) -> None:
    """Start this process's sweeps for the instances of ``app``'s pooled cachify tasks."""
    seen: set[int] = set()
    for task in list(app.tasks.values()):
        policies = getattr(type(task), "_cachify_policies", None)
        if policies is None or not policies.declared.options.uses_waiting_rooms:
            continue
        try:
            instance = policies.declared.cachify
        except CachifyInitError:
            continue  # no instance in this process yet: the first delivery starts it
        if id(instance) in seen:
            continue
        seen.add(id(instance))
        try:
            ensure_sweeper(app, instance)
        except Exception:
            logger.exception("cachify: could not start the waiting-room sweep for task %s", task.name)
