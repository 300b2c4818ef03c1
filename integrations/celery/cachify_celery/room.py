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
  refused), carrying the entry id in the ``cachify_reservation`` header. On a Redis broker it
  goes to the consuming end of the queue (:mod:`.front`), so its reserved slot does not idle
  behind the queue's backlog; a batch is published newest first there, so the oldest is
  taken first. A hand-over is published from inside the releasing task's run, but it is not
  that task's child: while it is published, Celery is not told of the running task
  (:func:`outside_running_task`), so the message keeps the parent and root it was first sent
  with, inherits no priority, and is not added to the releasing task's ``children``.
* :func:`ensure_sweeper` / :func:`start_for_app`: every process that runs cachify tasks sweeps
  the waiting rooms of its instances about once a second on cachify's renewal thread — and at
  each timed entry's due time
  (:func:`cachify_core.tasks.handover.start_worker_sweeper`): a hand-over whose publish was
  lost is published again, a slot freed by expiry (a dead holder's) goes to the next parked
  task. One read a second while nothing waits. It starts in the worker's main process when the
  worker is ready, and a main process that can name its tasks' instances before its pool
  starts tells its prefork children so (:data:`MAIN_SWEEPS_ENV`): one sweeper per worker.
  Otherwise (an instance made per child, e.g. by ``init_cachify`` in a ``worker_process_init``
  handler) each child sweeps, from its start or its first pooled delivery.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from celery import _state as celery_state
from kombu import serialization

from cachify_core.backends.base import Handover
from cachify_core.errors import CachifyInitError
from cachify_core.instance import Cachify
from cachify_core.tasks import handover

from . import front
from .envelope import REQUEUES_HEADER, RESERVATION_HEADER

__all__ = [
    "FRAMEWORK",
    "ensure_sweeper",
    "outside_running_task",
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


#: Bounds the unwinding of :func:`outside_running_task` (tasks called from tasks nest).
_MAX_NESTED_TASKS = 64


@contextlib.contextmanager
def outside_running_task() -> Iterator[None]:
    """Meanwhile, this thread runs no task as far as Celery can tell.

    ``send_task`` fills a message's ``root_id`` and ``parent_id`` it was not given from the task
    the worker runs in this thread (and its priority, with ``task_inherit_parent_priority``), and
    adds the result to that task's ``children``: right for a task a body sends, wrong for a
    hand-over, which only happens to be published by the task that freed its slot. Celery has no
    option for "not a child" (a ``parent_id`` of ``None`` is filled in), so the thread's stack of
    running tasks (``celery._state._task_stack``, which Celery's tracer pushes and pops) is
    emptied meanwhile and put back as it was, even if the publish raises. Its ``push``/``pop``
    are taken from the stack at each call, not from ``celery._state``'s module-level aliases:
    with ``USE_FAST_LOCALS`` those are bound to the importing thread's list.
    """
    stack: Any = celery_state._task_stack  # looked up now: its push/pop may be per thread
    hidden: list[Any] = []
    try:
        while stack.top is not None and len(hidden) < _MAX_NESTED_TASKS:
            hidden.append(stack.pop())
        yield
    finally:
        for task in reversed(hidden):
            stack.push(task)


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
    with front.at_front(), outside_running_task():
        signature.apply_async(add_to_parent=False)


def at_front(app: Any) -> bool:
    """Whether ``app``'s hand-overs go to the consuming end of their queue (a Redis broker,
    kombu's Redis channel wrapped): they are then published newest first."""
    known = getattr(app, "_cachify_front", None)
    if known is None:
        with app.connection_for_write() as connection:
            redis_broker = connection.transport.driver_type == "redis"
        known = app._cachify_front = redis_broker and front.install()
    return bool(known)


def publish_handovers(app: Any, handed: Sequence[Handover]) -> int:
    """Publish each Celery hand-over of ``handed``; a failure is logged and left to the sweep."""
    return handover.publish_all(
        FRAMEWORK, handed, lambda entry_id, body: publish_handover(app, entry_id, body), at_front(app)
    )


#: Set by a worker's main process, before it forks its pool, when it will sweep itself (it can
#: name the instances its tasks use): its prefork children then leave the sweep to it, so one
#: worker is one sweeper however many children it has. The value is the main process's pid.
MAIN_SWEEPS_ENV = "CACHIFY_CELERY_MAIN_SWEEPS"


def announce_main_sweep(app: Any) -> None:
    """In the worker's main process, before the pool starts: if this process will sweep (its
    tasks' instances exist here), tell the children to come so they do not sweep too."""
    if _instances(app):
        os.environ[MAIN_SWEEPS_ENV] = str(os.getpid())


def _left_to_main() -> bool:
    owner = os.environ.get(MAIN_SWEEPS_ENV)
    return owner is not None and owner != str(os.getpid())


def ensure_sweeper(app: Any, cachify: Cachify) -> None:
    """Sweep ``cachify``'s waiting rooms from this process (once per process and instance),
    unless this is a prefork child whose main process sweeps."""
    if _left_to_main():
        return
    handover.start_worker_sweeper(
        cachify,
        FRAMEWORK,
        lambda entry_id, body: publish_handover(app, entry_id, body),
        newest_first=at_front(app),
    )


def _instances(app: Any) -> list[tuple[str, Cachify]]:
    """The distinct instances of ``app``'s cachify tasks that use waiting rooms, each with the
    name of a task using it (only those this process can name already)."""
    found: dict[int, tuple[str, Cachify]] = {}
    for task in list(app.tasks.values()):
        policies = getattr(type(task), "_cachify_policies", None)
        if policies is None or not policies.declared.options.uses_waiting_rooms:
            continue
        try:
            instance = policies.declared.cachify
        except CachifyInitError:
            continue  # no instance in this process yet: the first delivery starts it
        found.setdefault(id(instance), (task.name, instance))
    return list(found.values())


def start_for_app(app: Any) -> None:
    """Start this process's sweeps for the instances of ``app``'s pooled or rate-limited tasks."""
    for name, instance in _instances(app):
        try:
            ensure_sweeper(app, instance)
        except Exception:
            logger.exception("cachify: could not start the waiting-room sweep for task %s", name)
