"""Records of the pool slot each running task holds, so a worker's main process can free the
slot of a prefork child that died mid-task.

A slot lease is owned by a random token drawn inside the child (``cachify_core.tasks``), which
the main process cannot know. When a child is SIGKILLed (OOM killer, hard time limit, revoke
with ``terminate=True``), Celery reports it in the main process (``WorkerLostError``,
``TimeLimitExceeded``, ``task_revoked``); there we read the child's record and give the slot
back at once instead of waiting up to ``pool_slot_ttl`` for the lease to expire.

A record is a lock-shaped entry ``<prefix>celery-slot-<task id>-<attempt>`` (attempt:
``<retries>.<requeues>``, which the main process reads from the same request) whose owner token is
``"<slot key>\\n<slot token>"``: the lock primitives give set-if-absent with a TTL, a read, and
compare-and-delete, which is all a record needs. Records are written only by prefork children
and only for runs that took a slot: 1 round trip after the slot is taken and 1 after it is
given back. Solo and threads pools die with their worker, leaving nobody to read a record, so
they write none; slot TTLs cover them (and a dead host).
"""

from __future__ import annotations

import logging
from typing import Any

from cachify_core.instance import Cachify
from cachify_core.tasks import RunHandle

from .headers import requeue_count

__all__ = [
    "Record",
    "attempt_of",
    "forget",
    "free_slot_of",
    "in_prefork_child",
    "mark_prefork_child",
    "record",
]

logger = logging.getLogger("cachify.celery")

#: A record outlives any slot it names: a day. It is deleted when the run ends; only a dead
#: host leaves one behind, and it expires on its own.
RECORD_TTL_MS = 24 * 3600 * 1000

Record = tuple[str, str]  # (record key, record value)

_prefork_child = False


def mark_prefork_child() -> None:
    """Called in each prefork child as it starts (``worker_process_init``)."""
    global _prefork_child
    _prefork_child = True


def in_prefork_child() -> bool:
    return _prefork_child


def attempt_of(request: Any) -> str:
    """Which delivery of a task id a request is. A retry or requeue of a task can start before the
    run that sent it has finished; each keeps its own record."""
    retries = getattr(request, "retries", 0)
    return f"{retries if isinstance(retries, int) else 0}.{requeue_count(request)}"


def _key(c: Cachify, task_id: str, attempt: str) -> str:
    return f"{c.prefix}celery-slot-{task_id}-{attempt}"


def _release_named_slot(c: Cachify, value: str) -> bool:
    slot_key, _, token = value.partition("\n")
    return bool(token) and c.sync_backend.pool_release(slot_key, token)


def record(handle: RunHandle | None, attempt: str) -> Record | None:
    """Note the slot ``handle`` holds (prefork children only). 1 round trip.

    A record already there was left by a run of the same delivery whose worker was lost and
    whose message the broker then delivered again (``acks_late`` with ``reject_on_worker_lost``):
    that run is gone, so its slot is given back first (3 more round trips, only then). A message
    delivered twice while its first run still goes on (a broker visibility timeout shorter than
    the run) would have that run's slot taken from it early: the pool then admits one extra run.
    """
    if not _prefork_child or handle is None or handle.slot_key is None or handle.slot_token is None:
        return None
    c = handle.cachify
    backend = c.sync_backend
    key, value = _key(c, handle.task_id, attempt), f"{handle.slot_key}\n{handle.slot_token}"
    try:
        if not backend.lock_acquire(key, value, RECORD_TTL_MS, False):
            stale = backend.lock_holder(key)
            if stale is not None and stale != value and _release_named_slot(c, stale):
                logger.info("cachify: freed the pool slot of an earlier, lost run of task %s", handle.task_id)
            backend.lock_force_release(key)
            if not backend.lock_acquire(key, value, RECORD_TTL_MS, False):
                return None
    except Exception as exc:  # the run goes on; should its child die, the slot frees by its TTL
        logger.warning("cachify: could not record the pool slot of task %s: %s", handle.task_id, exc)
        return None
    return key, value


def forget(c: Cachify, entry: Record | None) -> None:
    """The run gave its slot back: drop its record. 1 round trip."""
    if entry is None:
        return
    try:
        c.sync_backend.lock_release(*entry)
    except Exception as exc:  # harmless: it expires, and names a slot already given back
        logger.warning("cachify: could not delete slot record %s: %s", entry[0], exc)


def free_slot_of(c: Cachify, task_id: str, attempt: str) -> bool:
    """Main process: give back the slot a lost child held for ``task_id``. 3 round trips.

    ``True`` if a slot was released. The slot release is owner-checked, so a record naming a
    slot that already expired frees nothing of anyone else's.
    """
    backend = c.sync_backend
    key = _key(c, task_id, attempt)
    value = backend.lock_holder(key)
    if value is None:
        return False
    backend.lock_release(key, value)
    return _release_named_slot(c, value)
