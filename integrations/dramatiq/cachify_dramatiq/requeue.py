"""Publishing the requeued copy of a message whose pool was full and could not park (the
fallback: no waiting room on the store, ``pool_max_waiting`` reached, an unreachable store's
``on_store_error="defer"``, a ``CachifyPoolFullError`` escaping the body).

Same message id (its dedup hold and its result key carry over), ``retries`` untouched, the
reservation it carries kept (it claims its reserved slot when it comes back),
``cachify_requeues`` + 1 (and, deferred by a store error, ``cachify_origin``), sent after the backoff the delivery decided, **before** this delivery
is acknowledged: a crash in between can duplicate the task, never lose it.
"""

from __future__ import annotations

from .event_loop import drive
from .thread_state import Current

__all__ = ["no_result", "publish"]


def publish(current: Current) -> None:
    message, delivery = current.message, current.delivery
    delay_s = 0.0 if delivery.decision is None else delivery.decision.delay_s
    again = message.copy(options=delivery.copy_fields())  # requeues + 1, and after a store error its origin
    try:
        current.broker.enqueue(again, delay=int(delay_s * 1000))
    except BaseException:
        drive(current.actor, delivery.requeue_failed, delivery.arequeue_failed)
        raise
    delivery.requeue_published()
    no_result(current)


def no_result(current: Current) -> None:
    """This delivery is skipped, and Results stores None for a skipped message; the copy (a
    requeue, or the waiting room's hand-over) has the same id, so that None would be read as
    its result before it ran. This delivery's own options (the copy has its own) turn storing
    off."""
    current.message.options["store_results"] = False
