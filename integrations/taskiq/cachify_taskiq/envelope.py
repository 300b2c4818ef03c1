"""What cachify carries in a Taskiq message's labels, and the option labels a sender set.

Taskiq sends labels as text tagged with their type (``int``, ``str``, ``float``, ``bool``,
``bytes``; anything else as ``str(value)`` tagged "any") and parses them back before the
worker's hooks run. So cachify's own labels are plain strings and ints:

* :data:`REQUEUES_LABEL` (the core's ``REQUEUES_FIELD``): how many times a full pool sent this
  task id back; apart from the retry middlewares' ``_retries``.
* :data:`OPTIONS_LABEL` (the core's ``OPTIONS_FIELD``): the message's validated option
  overrides as one JSON text, written by ``pre_send``. The worker reads per-message options
  from here only, never from the option labels themselves, whose types a re-send loses.
* :data:`RESERVATION_LABEL` (the core's ``RESERVATION_FIELD``): the waiting-room entry id a
  handed-over copy was given a slot for; a text. Kept by a requeue and a retry of that copy.
* the core's ``ORIGIN_FIELD`` (a text): on a copy deferred while the store could not be heard,
  the name its deferred delivery parked under (:func:`park_id`).
* :data:`REPUBLISH_LABEL`, :data:`DUPLICATE_LABEL`: markers between ``pre_send`` and the
  wrapped ``kick``; removed before anything reaches a broker.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from taskiq.labels import LabelType, parse_label, prepare_label
from taskiq.message import TaskiqMessage

from cachify_core.tasks import (
    OPTIONS_FIELD,
    ORIGIN_FIELD,
    REQUEUES_FIELD,
    RESERVATION_FIELD,
    CachifyTaskOptionError,
    delivery_name,
    is_task_option,
    read_overrides,
    read_requeues,
    read_reservation,
    write_overrides,
)

__all__ = [
    "DUPLICATE_LABEL",
    "OPTIONS_LABEL",
    "REPUBLISH_LABEL",
    "REQUEUES_LABEL",
    "RESERVATION_LABEL",
    "RETRIES_LABEL",
    "as_sent",
    "carried_options",
    "option_labels",
    "park_id",
    "pop_label",
    "requeues",
    "reservation",
    "write_options",
]

REQUEUES_LABEL = REQUEUES_FIELD
OPTIONS_LABEL = OPTIONS_FIELD
RESERVATION_LABEL = RESERVATION_FIELD
#: Put on cachify's own requeue and removed by ``pre_send``: a re-send, never refused.
REPUBLISH_LABEL = "cachify_republish"
#: Put by ``pre_send`` on a duplicate's message (value: the id it would have had); the wrapped
#: ``kick`` skips it, so nothing is enqueued and ``kiq`` returns a handle to the holder's id.
DUPLICATE_LABEL = "cachify_duplicate_of"
#: Taskiq's label on a scheduler's kick.
SCHEDULE_LABEL = "schedule_id"
#: Taskiq's retry middlewares count a task's retries here, so a message carrying it is a retry
#: even when no delivery sees it sent (``SmartRetryMiddleware`` with a schedule source).
RETRIES_LABEL = "_retries"


def as_sent(value: Any) -> str:
    """A label value as the message carries it (the text Taskiq sends)."""
    return prepare_label(value)[0]


def pop_label(message: TaskiqMessage, name: str) -> Any:
    if message.labels_types is not None:
        message.labels_types.pop(name, None)
    return message.labels.pop(name, None)


def requeues(labels: Mapping[str, Any]) -> int:
    return read_requeues(labels.get(REQUEUES_LABEL))


def park_id(task_id: str, labels: Mapping[str, Any]) -> str:
    """The delivery's name in a waiting room: the same for a redelivery of this message (a
    stream entry reclaimed from a dead worker: same task id, retry and requeue count), so it is
    not parked twice; a retry or a requeue is a new attempt with a name of its own. A copy
    deferred while the store could not be heard takes its deferred delivery's name (the
    ``cachify_origin`` label), so what that delivery's unanswered call parked is recognised."""
    return delivery_name(
        "taskiq", task_id, labels.get(RETRIES_LABEL), requeues(labels), labels.get(ORIGIN_FIELD)
    )


def reservation(labels: Mapping[str, Any]) -> str | None:
    return read_reservation(labels.get(RESERVATION_LABEL))


def carried_options(labels: Mapping[str, Any]) -> Any:
    """The overrides a message carries (``None``: none), for ``TaskPolicies.with_overrides``."""
    return read_overrides(labels.get(OPTIONS_LABEL))


def option_labels(task_name: str, message: TaskiqMessage, declared: Mapping[str, str]) -> dict[str, Any]:
    """The cachify-option labels of ``message`` whose text differs from the task's declared
    ones (``declared``: name → text as sent), typed again: ``kicker().with_labels(...)``."""
    types = message.labels_types or {}
    # ``schedule_by_cron/interval/time`` store a kicker's labels as text, so the scheduler's
    # kick tags every one "str": there, a text that reads as a Python literal is that literal.
    scheduled = SCHEDULE_LABEL in message.labels
    found: dict[str, Any] = {}
    for name, value in message.labels.items():
        if is_task_option(name) and declared.get(name) != value:
            found[name] = _typed(task_name, name, value, types.get(name), scheduled)
    return found


def write_options(message: TaskiqMessage, overrides: Mapping[str, Any]) -> None:
    """Carry validated ``overrides`` as one JSON label instead of their own labels."""
    for name in overrides:
        pop_label(message, name)
    message.labels[OPTIONS_LABEL] = write_overrides(overrides)
    if message.labels_types is not None:
        message.labels_types[OPTIONS_LABEL] = LabelType.STR.value


def _typed(task_name: str, name: str, value: Any, label_type: int | None, scheduled: bool) -> Any:
    if label_type is None or not isinstance(value, str):
        return value  # a message built by hand: its labels were never turned into text
    if label_type == LabelType.STR and scheduled:
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    if label_type != LabelType.ANY:
        return parse_label(value, label_type)
    try:  # "any" is ``str(value)``: None, tuples and lists read back, a callable does not
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise CachifyTaskOptionError(
            f"task {task_name!r}: the per-message option {name}={value} cannot travel in a Taskiq "
            "label (labels are sent as text); give a str, int, float, bool, None or a tuple of "
            "numbers, or declare it on the task"
        ) from None
