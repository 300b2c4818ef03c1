"""Requeue: send a task whose pool was full back through the broker, same task id, later.

This is Celery's own retry mechanism minus the retry budget: the message is rebuilt from the
running request (``signature_from_request``, as ``Task.retry`` does) with ``countdown`` set to
the policy's backoff and the requeue count in a header, while ``retries`` stays as it was.
The caller then raises ``Ignore`` so the current message is acknowledged, after the new one was
published: a crash in between can run the task twice, never lose it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from cachify_core.tasks import TaskPolicy

from .headers import REQUEUES_HEADER

__all__ = ["REPUBLISH_OPTION", "publish_requeue"]

logger = logging.getLogger("cachify.celery")

#: ``apply_async`` option marking a requeue: the dedup hold is already this task's (the policy
#: kept it), so no claim is made for it.
REPUBLISH_OPTION = "_cachify_republish"


def publish_requeue(
    task: Any,
    policy: TaskPolicy,
    request: Any,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    requeues: int,
    delay_s: float,
) -> None:
    """Publish requeue number ``requeues`` of the running task, due in ``delay_s`` seconds.

    If the publish fails, the task will not run again under its id: what the policy kept for
    it (a ``queued`` dedup hold) is released and the error propagates, so Celery records the
    failure (or retries it, with ``autoretry_for``) instead of the task vanishing.
    """
    headers = dict(request.headers or {})
    headers[REQUEUES_HEADER] = requeues
    try:
        signature = task.signature_from_request(request, args, kwargs, countdown=delay_s, headers=headers)
        signature.apply_async(**{REPUBLISH_OPTION: True})
    except BaseException:
        logger.error("cachify: task %s[%s] could not be requeued", task.name, request.id, exc_info=True)
        policy.release_requeued(request.id, args, kwargs)
        raise
    logger.info(
        "cachify: task %s[%s] requeued (%d) in %.2fs: pool full", task.name, request.id, requeues, delay_s
    )
