"""Labels cachify adds to Taskiq messages, and reading them back.

Taskiq sends a message's labels as strings with their types and parses them back before the
worker's hooks run, so an ``int`` label arrives as an ``int``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DUPLICATE_LABEL", "REPUBLISH_LABEL", "REQUEUES_LABEL", "requeue_count"]

#: How many times this task id went back through the broker because its pool was full. Kept
#: apart from the retry middlewares' ``_retries``, so requeues never spend ``max_retries``.
REQUEUES_LABEL = "cachify_requeues"
#: Put on the message of cachify's own requeue and removed again by ``pre_send``: the policy
#: kept this task id's dedup hold across the requeue, so no new claim is made for it.
REPUBLISH_LABEL = "cachify_republish"
#: Put by ``pre_send`` on the message of a duplicate (value: the id it would have had). The
#: broker's ``kick`` skips such a message, so nothing is enqueued and ``kiq`` returns a handle
#: to the holder's task id. Never reaches a broker.
DUPLICATE_LABEL = "cachify_duplicate_of"


def requeue_count(labels: Mapping[str, Any]) -> int:
    value = labels.get(REQUEUES_LABEL, 0)
    try:
        count = int(value)
    except (TypeError, ValueError):
        return 0
    return max(count, 0)
