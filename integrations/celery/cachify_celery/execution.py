"""A task run on the worker: the policy's admit → run → finish, mapped onto Celery's outcomes.

Called from ``CachifyTask.__call__``, i.e. inside Celery's tracer, with the request already
pushed. What each verdict becomes:

========  ==========================================================================
RUN       the body runs; ``finish`` stores a successful result in the cache and
          releases the slot and the hold (a ``queued`` hold is kept for a retry)
CACHED    the cached value is returned, so Celery stores it as the SUCCESS result
RETURN    the callable ``pool_on_full``'s value, returned likewise
SKIP      ``Ignore``: acknowledged, not run, nothing stored (logged by the policy)
REQUEUE   re-published with a countdown and ``Ignore`` (eager runs sleep and loop)
========  ==========================================================================

Round trips on top of Celery's: those of ``admit`` and ``finish`` (1 per enabled option each),
plus the slot record of a prefork child (2, see :mod:`.slot_records`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from celery.exceptions import Ignore, Reject, Retry

from cachify_core.errors import CachifyPoolFullError
from cachify_core.tasks import Admission, Outcome, RunHandle, TaskPolicy, Verdict

from . import slot_records
from .headers import requeue_count
from .requeue import publish_requeue

__all__ = ["execute"]

logger = logging.getLogger("cachify.celery")

_UNTRACKED = Admission(Verdict.RUN)  # a task without options: nothing to admit or finish


def _finish(policy: TaskPolicy, handle: RunHandle | None, outcome: Outcome, result: Any = None) -> None:
    """Finish without letting a backend error replace the run's own outcome.

    The body already ran: turning its success into a failure because the cache write or a
    release failed would make Celery retry side effects. Anything not released expires by its
    TTL (renewal has already stopped).
    """
    if handle is None:
        return
    try:
        policy.finish(handle, outcome, result)
    except Exception:
        logger.exception("cachify: task %s: finishing its run (%s) failed", policy.options.task_name, outcome)


def _run(
    task: Any,
    request: Any,
    policy: TaskPolicy,
    admission: Admission,
    requeues: int,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> tuple[bool, Any]:
    """Run the body: ``(True, result)``, or ``(False, admission)`` when the body found a pool full."""
    handle = admission.handle
    record = slot_records.record(handle, slot_records.attempt_of(request))
    try:
        result = task.run(*args, **kwargs)
    except CachifyPoolFullError as exc:  # a stacked @pooled / `with pool(...)`: handled like pool_on_full
        try:
            after = policy.body_pool_full(requeues, args, kwargs, exc)
        except BaseException:
            _finish(policy, handle, "failure")
            raise
        _finish(policy, handle, "retry" if after.verdict is Verdict.REQUEUE else "failure")
        return False, after
    except Retry:
        _finish(policy, handle, "retry")
        raise
    except Reject as exc:  # requeue=True: the broker redelivers the same task id
        _finish(policy, handle, "retry" if exc.requeue else "failure")
        raise
    except BaseException:
        _finish(policy, handle, "failure")
        raise
    else:
        _finish(policy, handle, "success", result)
        return True, result
    finally:
        if handle is not None:
            slot_records.forget(handle.cachify, record)


def execute(
    task: Any, policy: TaskPolicy, request: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Any:
    """Run one delivery of ``task`` under ``policy``; returns the value Celery stores."""
    task_id: str = request.id
    requeues = requeue_count(request)
    active = policy.options.active
    while True:
        try:
            admission = policy.admit(task_id, args, kwargs, requeues) if active else _UNTRACKED
        except Exception:
            # The task fails here: its enqueue claim must not block the key for once_ttl.
            try:
                policy.release_requeued(task_id, args, kwargs)
            except Exception as exc:
                logger.error(
                    "cachify: task %s: claim not released after a failed admission: %s", task_id, exc
                )
            raise
        if admission.verdict is Verdict.RUN:
            done, value = _run(task, request, policy, admission, requeues, args, kwargs)
            if done:
                return value
            admission = value
        if admission.verdict in (Verdict.CACHED, Verdict.RETURN):
            return admission.value
        if admission.verdict is Verdict.SKIP:
            raise Ignore()
        # REQUEUE
        if request.is_eager:  # no broker to come back through: wait here, same id, same request
            time.sleep(admission.delay_s)
            requeues += 1
            continue
        publish_requeue(task, policy, request, args, kwargs, requeues + 1, admission.delay_s)
        raise Ignore()
