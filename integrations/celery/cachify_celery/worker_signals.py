"""Releases that only the worker's main process can make: for runs that never finished.

A run releases what it holds itself (:mod:`.execution`). These Celery signals cover the runs
that could not:

* ``task_failure`` with ``WorkerLostError`` (a prefork child killed, e.g. SIGKILL or the OOM
  killer) or ``TimeLimitExceeded`` (hard time limit: the child is killed): sent in the main
  process; the slot is freed from the child's record (:mod:`.slot_records`) and the dedup hold,
  whose owner token is the task id, is released.
* ``task_revoked``: ``terminated=True`` is handled as above; a task revoked or expired before it
  started gives back the hold it took when it was sent.

A lost child whose message Celery redelivers (``acks_late`` with ``reject_on_worker_lost``)
or retries (``retry_on_worker_lost``) sends no ``task_failure``: its hold stays with the task
id that will run again; its slot frees within ``pool_slot_ttl``, as a dead host's do (sooner
if the redelivered run gets a slot of its own first and finds the lost run's record).
Handlers never raise (Celery would only log it): failures are logged and TTLs take over.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import signals

from cachify_core.tasks import Claim, TaskPolicy

from . import slot_records
from .headers import OPTIONS_HEADER, header
from .task import CachifyTask

__all__ = ["connect"]

logger = logging.getLogger("cachify.celery")

_LOST = (WorkerLostError, TimeLimitExceeded)


def _policy(task: CachifyTask, request: Any) -> TaskPolicy | None:
    policies = type(task)._cachify_policies
    return None if policies is None else policies.with_overrides(header(request, OPTIONS_HEADER))


def release_lost_run(
    task: CachifyTask, request: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> None:
    """A run died mid-way: free its pool slot and its dedup hold (any mode)."""
    try:
        policy = _policy(task, request)
        if policy is None or not policy.options.active:
            return
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        attempt = slot_records.attempt_of(request)
        if policy.options.pool_key is not None and slot_records.free_slot_of(
            policy.cachify, task_id, attempt
        ):
            logger.info("cachify: freed the pool slot of lost task %s[%s]", task.name, task_id)
        if policy.options.once_key is not None:
            policy.unclaim(task_id, Claim(policy.once_key(args, kwargs)))
    except Exception:
        logger.exception("cachify: releasing lost task %s[%s] failed; its TTLs will", task.name, task_id)


def release_unstarted(
    task: CachifyTask, request: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> None:
    """A sent task will never run (revoked or expired before it started): free its hold."""
    try:
        policy = _policy(task, request)
        if policy is not None and policy.options.claims_at_enqueue:
            policy.release_requeued(task_id, tuple(args or ()), dict(kwargs or {}))
    except Exception:
        logger.exception("cachify: releasing revoked task %s[%s] failed; its TTL will", task.name, task_id)


def _on_child_start(**_: Any) -> None:
    slot_records.mark_prefork_child()


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
    signals.worker_process_init.connect(_on_child_start, weak=False)
    signals.task_failure.connect(_on_failure, weak=False)
    signals.task_revoked.connect(_on_revoked, weak=False)
    _connected = True
