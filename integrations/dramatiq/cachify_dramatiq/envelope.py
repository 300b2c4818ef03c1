"""What cachify keeps in a Dramatiq message's ``options`` (the core's fields, :mod:`cachify_core.tasks.envelope`,
plus one of Dramatiq's own).

* Per-message overrides are sent as Dramatiq sends any option, as keywords of
  ``send_with_options(once_ttl=...)``, which land in ``message.options``. When the message is
  enqueued they move into the core's ``cachify_options`` field, so the worker reads one field
  (raw option names are still read, from a producer without the middleware).
* ``cachify_requeues``: the requeue count.
* ``cachify_origin``: on a copy deferred while the store could not be heard, the name its
  deferred delivery parked under (:func:`park_id`).
* ``cachify_claimed``: the message took its dedup hold when it was first sent, so a later
  enqueue of it (a retry, a requeue, a delayed message falling due) is a re-send of the holder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cachify_core.tasks import (
    OPTIONS_FIELD,
    ORIGIN_FIELD,
    REQUEUES_FIELD,
    delivery_name,
    read_overrides,
    read_requeues,
    split_overrides,
)

__all__ = [
    "CLAIMED_OPTION",
    "REQUEUES_OPTION",
    "in_composition",
    "is_first_enqueue",
    "park_id",
    "requeues",
    "take_overrides",
]

REQUEUES_OPTION = REQUEUES_FIELD
CLAIMED_OPTION = "cachify_claimed"
#: Options Dramatiq's composition sets on a message other work waits for: a pipeline step
#: that has a next one, a group member whose completion triggers callbacks.
_COMPOSITION_OPTIONS = ("pipe_target", "group_completion_uuid")


def take_overrides(options: dict[str, Any]) -> Any:
    """The message's overrides (``None`` without any), the raw keywords of ``send_with_options``
    moved into ``cachify_options`` (at enqueue; at the worker, from a producer without the
    middleware)."""
    raw = split_overrides(options)
    carried = read_overrides(options.get(OPTIONS_FIELD))
    if not raw:
        return carried
    if isinstance(carried, Mapping):
        raw = {**carried, **raw}
    options[OPTIONS_FIELD] = raw
    return raw


def requeues(options: Mapping[str, Any]) -> int:
    return read_requeues(options.get(REQUEUES_OPTION))


def park_id(message_id: str, options: Mapping[str, Any]) -> str:
    """The delivery's name in a waiting room: the same for a redelivery of this message after a
    crash (same id, ``retries`` and requeue count), so it is not parked twice; a retry or a
    requeue is a new attempt with a name of its own. A copy deferred while the store could not
    be heard takes its deferred delivery's name (``cachify_origin``), so what that delivery's
    unanswered call parked is recognised."""
    return delivery_name(
        "dramatiq", message_id, options.get("retries"), requeues(options), options.get(ORIGIN_FIELD)
    )


def is_first_enqueue(options: Mapping[str, Any]) -> bool:
    """Whether this enqueue sends a new message, rather than re-sending one that was sent."""
    return not (options.get(CLAIMED_OPTION) or options.get(REQUEUES_OPTION) or options.get("retries"))


def in_composition(options: Mapping[str, Any]) -> bool:
    """Whether other work waits for this message (a pipeline step, a group with callbacks)."""
    return any(options.get(name) is not None for name in _COMPOSITION_OPTIONS)
