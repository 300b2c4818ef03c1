"""What cachify carries in a task message, whatever the framework's envelope is called
(Celery headers, Dramatiq message options, Taskiq labels).

Four fields, read and written only here:

* ``cachify_requeues``: how many times a full pool sent this task id back. Kept apart from the
  framework's own retry counter, so requeues never spend ``max_retries``.
* ``cachify_options``: the per-message option overrides (``apply_async(..., once_ttl=60)``), as
  a JSON object. Celery and Dramatiq envelopes are JSON themselves and carry it as a dict;
  Taskiq turns labels into strings, so it travels as JSON text there. Both forms are read.
* ``cachify_reservation``: on a copy a pool's waiting room handed a slot to, the id of that
  waiting-room entry; its admission claims the slot reserved for it (``room_acquire``).
* ``cachify_origin``: on a copy deferred because its admission could not hear back from the
  store (``on_store_error="defer"``), the name the deferred delivery parked and leased under.
  Its call may have reached the store and only the reply been lost, so the copy asks under the
  same name: an entry that call parked is recognised (the copy is acknowledged, the entry
  carries on), never parked and run a second time. It names the copy it is for
  (``"<requeues>/<name>"``), so a later retry or requeue of the task, which inherits the
  framework's headers, does not take it for its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "OPTIONS_FIELD",
    "ORIGIN_FIELD",
    "REQUEUES_FIELD",
    "RESERVATION_FIELD",
    "delivery_name",
    "origin_value",
    "read_origin",
    "read_overrides",
    "read_requeues",
    "read_reservation",
    "write_overrides",
]

REQUEUES_FIELD = "cachify_requeues"
OPTIONS_FIELD = "cachify_options"
RESERVATION_FIELD = "cachify_reservation"
ORIGIN_FIELD = "cachify_origin"


def read_requeues(value: object) -> int:
    """The requeue count carried in a message; anything unreadable counts as none."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def delivery_name(framework: str, task_id: str, retries: object, requeues: int, origin: object = None) -> str:
    """The name every delivery of one message shares, and no other attempt of its task: the
    task id, the framework's retry count (unreadable: 0) and the requeue count. A redelivery
    after a crash carries the same; a retry or a requeue is a new attempt. Celery leases its
    slots under it; every integration parks under it (:attr:`.Delivery.park_id`). ``origin``:
    the message's ``cachify_origin``, whose name is taken instead when it was written for this
    delivery (:func:`read_origin`)."""
    own = f"{framework}:{task_id}:{read_requeues(retries)}.{requeues}"
    return own if origin is None else read_origin(origin, own) or own


def origin_value(copy_requeues: int, name: str) -> str:
    """The ``cachify_origin`` a deferred copy carries: the requeue count it is for, and the name
    its deferred delivery asked the store under."""
    return f"{copy_requeues}/{name}"


def read_origin(value: object, own_name: str) -> str | None:
    """The name a delivery named ``own_name`` (:func:`delivery_name`) asks the store under when
    its message carries ``value`` as ``cachify_origin``: the deferred delivery's, if ``value``
    was written for exactly this delivery (same task id and retry count, this requeue count);
    ``None`` otherwise (absent, unreadable, or inherited by a later retry or requeue)."""
    if not isinstance(value, str):
        return None
    count, sep, name = value.partition("/")
    own_attempt, dot, own_requeues = own_name.rpartition(".")
    if not sep or not dot or count != own_requeues:
        return None
    attempt, dot, _ = name.rpartition(".")
    return name if dot and attempt == own_attempt else None


def read_reservation(value: object) -> str | None:
    """The waiting-room entry a handed-over copy carries; ``None`` on any other message."""
    return value if isinstance(value, str) and value else None


def read_overrides(value: object) -> Any:
    """The overrides carried in a message (a dict, or its JSON text); ``None`` when absent.

    Anything else is returned as it is, for :meth:`TaskPolicies.with_overrides` to reject with
    the task's name in the message.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def write_overrides(overrides: Mapping[str, Any]) -> str:
    """Overrides as the JSON text a string-only envelope (Taskiq labels) carries."""
    return json.dumps(dict(overrides), sort_keys=True, separators=(",", ":"))
