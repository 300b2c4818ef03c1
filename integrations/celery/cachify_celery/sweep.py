"""The waiting-room sweep of a Celery worker process.

Every process that runs cachify tasks sweeps the waiting rooms of the instances its tasks use,
about once a second on cachify's renewal thread (:func:`cachify_core.tasks.handover.start_worker_sweeper`):
a hand-over whose publish was lost is published again, and a slot freed by expiry (a dead
holder's) goes to the next parked task. It costs one read a second while nothing waits.

It starts when a worker is ready (main process: solo and threads pools run tasks there) and
when a prefork child starts, for every instance the app's cachify tasks can already name, and
otherwise on the first pooled delivery a process runs (an instance made later, e.g. by
``init_cachify`` in a ``worker_process_init`` handler that runs after this one).
"""

from __future__ import annotations

import logging
from typing import Any

from cachify_core.errors import CachifyInitError
from cachify_core.instance import Cachify
from cachify_core.tasks import handover

from .requeue import FRAMEWORK, publish_handover

__all__ = ["ensure_sweeper", "start_for_app"]

logger = logging.getLogger("cachify.celery")


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
        if policies is None or policies.declared.options.pool_key is None:
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
