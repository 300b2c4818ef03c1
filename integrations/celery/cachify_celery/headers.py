"""Message headers cachify adds to a Celery task message, and reading them back on the worker.

Celery carries per-call values from ``apply_async`` to the worker only through message
headers; a worker sees them in ``task.request.headers`` (eager runs too). Retries re-send the
request's headers, so both values survive ``self.retry()``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OPTIONS_HEADER", "REQUEUES_HEADER", "header", "requeue_count"]

#: How many times this task id was requeued because its pool was full. Kept apart from
#: Celery's ``retries`` so that requeues never spend the task's ``max_retries``.
REQUEUES_HEADER = "cachify_requeues"
#: Per-call option overrides (``apply_async(..., cache_ttl=60)``), as a JSON-able dict.
OPTIONS_HEADER = "cachify_options"


def header(request: Any, name: str) -> Any:
    """The value of a custom header of a task request, or ``None``."""
    headers = getattr(request, "headers", None)
    return headers.get(name) if isinstance(headers, dict) else None


def requeue_count(request: Any) -> int:
    value = header(request, REQUEUES_HEADER)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
