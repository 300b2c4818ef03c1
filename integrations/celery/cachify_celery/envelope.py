"""What cachify carries in a Celery message: four headers (the core's envelope fields).

Celery carries per-call values from ``apply_async`` to the worker only in message headers; a
worker sees them in ``task.request.headers`` (eager runs too), and ``self.retry()`` re-sends the
request's headers, so both survive a retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cachify_core.tasks import (
    OPTIONS_FIELD,
    ORIGIN_FIELD,
    REQUEUES_FIELD,
    RESERVATION_FIELD,
    read_overrides,
    read_requeues,
    read_reservation,
)

__all__ = [
    "OPTIONS_HEADER",
    "ORIGIN_HEADER",
    "REQUEUES_HEADER",
    "RESERVATION_HEADER",
    "carried_origin",
    "carried_overrides",
    "requeues_of",
    "reservation_of",
    "with_overrides",
]

#: How many times a full pool sent this task id back (never spends ``max_retries``).
REQUEUES_HEADER = REQUEUES_FIELD
#: Per-call option overrides (``apply_async(..., once_ttl=60)``), a JSON object.
OPTIONS_HEADER = OPTIONS_FIELD
#: On a copy a pool's waiting room handed a slot to: the waiting-room entry's id.
RESERVATION_HEADER = RESERVATION_FIELD
#: On a copy deferred while the store could not be heard: the name its deferred delivery used.
ORIGIN_HEADER = ORIGIN_FIELD


def _headers(request_or_headers: Any) -> Mapping[str, Any]:
    if isinstance(request_or_headers, Mapping):
        return request_or_headers
    headers = getattr(request_or_headers, "headers", None)
    return headers if isinstance(headers, Mapping) else {}


def requeues_of(request_or_headers: Any) -> int:
    return read_requeues(_headers(request_or_headers).get(REQUEUES_HEADER))


def reservation_of(request_or_headers: Any) -> str | None:
    return read_reservation(_headers(request_or_headers).get(RESERVATION_HEADER))


def carried_origin(request_or_headers: Any) -> object:
    """The ``cachify_origin`` a message carries, as it is (``delivery_name`` reads it)."""
    return _headers(request_or_headers).get(ORIGIN_HEADER)


def carried_overrides(request_or_headers: Any) -> Any:
    """The overrides a message (or a request's headers) carries; ``None`` when none."""
    return read_overrides(_headers(request_or_headers).get(OPTIONS_HEADER))


def with_overrides(options: dict[str, Any], overrides: Mapping[str, Any]) -> Any:
    """Put ``overrides`` into the send options' headers, on top of any already carried (a retry
    re-sends the first call's); returns what the message now carries."""
    headers = dict(options.get("headers") or {})
    carried = carried_overrides(headers)
    merged = {**carried, **overrides} if isinstance(carried, Mapping) else dict(overrides)
    headers[OPTIONS_HEADER] = merged
    options["headers"] = headers
    return merged
