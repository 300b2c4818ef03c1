"""Releases that only the worker's main process can make, for runs that never finished, and
the store check at worker start.

A run releases what it holds itself (:mod:`.hooks`). These Celery signals cover the runs that
could not:

* ``task_failure`` with ``WorkerLostError`` (a prefork child killed, e.g. SIGKILL or the OOM
  killer) or ``TimeLimitExceeded`` (hard time limit: the child is killed): sent in the main
  process. The slot is released under the token the child leased it with — derived from the
  delivery (:func:`.hooks.slot_token`), so no record of it is needed — and the dedup hold,
  whose owner token is the task id, is released: 2 round trips, both owner-checked.
* ``task_revoked``: ``terminated=True`` is handled as above; a task revoked or expired before it
  started gives back the hold it took when it was sent.

A lost child whose message Celery redelivers (``acks_late`` with ``reject_on_worker_lost``)
or retries (``retry_on_worker_lost``) sends no ``task_failure``: its hold stays with the task
id that will run again, and the redelivered run (same token) takes over its slot.
Handlers never raise (Celery would only log it): failures are logged and TTLs take over.

The freed slot of a lost run goes to the next parked task: its message is published from the
main process at once. ``worker_ready`` and ``worker_process_init`` start the process's
waiting-room sweep (:mod:`.room`); ``worker_shutdown`` stops it. ``worker_ready`` also puts
hand-overs first in the worker's wait for a free child (:mod:`.pool_order`).

``worker_init`` refuses to start a worker whose cachify tasks use the embedded in-memory
backend with an out-of-process broker: that backend coordinates one process, so holds, slots
and cache entries would silently not be shared (raised as ``SystemExit`` with the reason, the
one exception Celery's signal dispatch lets through).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import signals

from cachify_core.errors import CachifyInitError
from cachify_core.tasks import OPTION_NAMES, handover

from . import pool_order
from .declaration import declared_options
from .hooks import CachifyTask, slot_token
from .publish import policy_for_message, uses_in_process_broker
from .room import announce_main_sweep, publish_handovers, start_for_app

__all__ = ["check_at_start", "connect"]

logger = logging.getLogger("cachify.celery")

_LOST = (WorkerLostError, TimeLimitExceeded)


def release_lost_run(
    task: CachifyTask, request: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> None:
    """A run died mid-way: free its pool slot and its dedup hold (any mode)."""
    try:
        policy = policy_for_message(task, getattr(request, "headers", None))
        if policy is None or not policy.options.active:
            return
        handed = policy.release_lost_run(task_id, tuple(args or ()), dict(kwargs or {}), slot_token(request))
        logger.info("cachify: released the slot and hold of lost task %s[%s]", task.name, task_id)
        if handed:
            publish_handovers(task.app, handed)
    except Exception:
        logger.exception("cachify: releasing lost task %s[%s] failed; its TTLs will", task.name, task_id)


def release_unstarted(
    task: CachifyTask, request: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> None:
    """A sent task will never run (revoked or expired before it started): free its hold."""
    try:
        policy = policy_for_message(task, getattr(request, "headers", None))
        if policy is not None and policy.options.claims_at_enqueue:
            policy.release_requeued(task_id, tuple(args or ()), dict(kwargs or {}))
    except Exception:
        logger.exception("cachify: releasing revoked task %s[%s] failed; its TTL will", task.name, task_id)


def check_at_start(app: Any) -> None:
    """Raise ``SystemExit`` naming the task and the fix when cachify options cannot apply:
    declared on a task whose class is not a ``CachifyTask`` (Celery keeps unknown decorator
    keywords as plain attributes, so they would silently do nothing), or bound to the
    in-memory backend while the broker's workers are other processes."""
    in_process = uses_in_process_broker(app)
    for task in list(app.tasks.values()):
        if not isinstance(task, CachifyTask):
            ignored = sorted(k for k in declared_options(type(task), object) if k in OPTION_NAMES)
            if ignored:
                raise SystemExit(
                    f"celery worker: task {task.name!r} declares {', '.join(ignored)}, but its class is "
                    "not a CachifyTask, so cachify cannot apply them: create the app with "
                    "Celery(..., task_cls=CachifyTask) or call cachify_celery.install(app) before "
                    "declaring tasks (or pass base=CachifyTask)"
                )
            continue
        policies = type(task)._cachify_policies
        if in_process or policies is None or not policies.active:
            continue
        try:
            policies.declared.cachify  # noqa: B018  # no instance yet: init_cachify runs per child
        except CachifyInitError:
            continue
        try:
            policies.declared.require_shared_store("Celery")
        except CachifyInitError as exc:
            raise SystemExit(f"celery worker: {exc}") from None


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None:
        check_at_start(app)
        announce_main_sweep(app)  # before the pool forks: its children leave the sweep to it


def _on_ready(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None:
        start_for_app(app)
    pool_order.install(getattr(sender, "controller", None))  # sender: the worker's consumer


def _on_process_init(**_: Any) -> None:
    from celery import current_app

    start_for_app(current_app)


def _on_shutdown(**_: Any) -> None:
    handover.stop_worker_sweepers()


def _on_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    if isinstance(sender, CachifyTask) and isinstance(exception, _LOST) and task_id:
        # on_failure pushes the request for its receivers; on_timeout does not, so a task that
        # was retried or requeued before its time limit hit is not found here: its TTLs free it.
        release_lost_run(sender, sender.request, task_id, args, kwargs or {})


def _on_revoked(sender: Any = None, request: Any = None, terminated: bool = False, **_: Any) -> None:
    if not isinstance(sender, CachifyTask) or request is None or not request.id:
        return
    release = release_lost_run if terminated else release_unstarted
    release(sender, request, request.id, request.args or (), request.kwargs or {})


_connected = False


def connect() -> None:
    """Connect the handlers (idempotent; done when :mod:`cachify_celery` is imported)."""
    global _connected
    if _connected:
        return
    signals.worker_init.connect(_on_worker_init, weak=False)
    signals.worker_ready.connect(_on_ready, weak=False)
    signals.worker_process_init.connect(_on_process_init, weak=False)
    signals.worker_shutdown.connect(_on_shutdown, weak=False)
    signals.task_failure.connect(_on_failure, weak=False)
    signals.task_revoked.connect(_on_revoked, weak=False)
    _connected = True
