"""Publishing the requeued copy of a message whose pool was full.

Same message id (its dedup hold and its result key carry over), ``retries`` untouched,
``cachify_requeues`` + 1, sent after the backoff the delivery decided, **before** this delivery
is acknowledged: a crash in between can duplicate the task, never lose it.
"""

from __future__ import annotations

from .envelope import REQUEUES_OPTION
from .event_loop import drive
from .thread_state import Current

__all__ = ["publish"]


def publish(current: Current) -> None:
    message, delivery = current.message, current.delivery
    delay_s = 0.0 if delivery.decision is None else delivery.decision.delay_s
    again = message.copy(options={REQUEUES_OPTION: delivery.requeues + 1})
    try:
        current.broker.enqueue(again, delay=int(delay_s * 1000))
    except BaseException:
        drive(current.actor, delivery.requeue_failed, delivery.arequeue_failed)
        raise
    delivery.requeue_published()
    # This delivery is skipped, and Results stores None for a skipped message; the copy has the
    # same id, so that None would be read as its result before it ran. This delivery's own
    # options (the copy has its own) turn storing off.
    message.options["store_results"] = False
