"""Delayed messages a Redis consumer drops when its connection breaks, put back once it is
connected again.

Dramatiq holds a delayed message (``send_with_options(delay=...)``, a retry's backoff,
cachify's deferral while the store is unreachable) in the consumer thread's memory until it is
due, while the broker keeps it in that worker's acknowledgement set. When the consumer's
connection breaks (a broker restart), Dramatiq empties that memory (``delay_queue =
PriorityQueue()``) and the messages stay in the set of a worker that is alive and
heartbeating, so nothing requeues them until the worker restarts (dramatiq#527; seen in
``benchmarks/chaos.py``: a broker restart just after a store outage left 3 to 95 of cachify's
deferrals stuck).

:func:`keep` gives one consumer thread of a ``RedisBroker`` a subclass that remembers the
messages Dramatiq drops there, and requeues them (``requeue``: back from this worker's
acknowledgement set to their delay queue, where any consumer takes them again with their ETA)
from the next ``handle_delayed_messages`` that reaches the broker, and keeps a due message whose
enqueue fails (below). A message already requeued by another path (a dead worker's sweep) is
not in the set any more, and the broker's requeue skips it. Cost: nothing until a connection breaks with delayed messages held.
"""

from __future__ import annotations

import logging
from queue import Empty
from typing import Any

from dramatiq.common import current_millis, iter_queue, q_name
from dramatiq.errors import ConnectionClosed

from .subclassing import give_subclass

__all__ = ["keep"]

logger = logging.getLogger("cachify")

_DROPPED = "_cachify_dropped"  #: instance attribute: the messages Dramatiq dropped, to requeue


def keep(thread: Any) -> None:
    """Give ``thread`` (a ``dramatiq.worker.ConsumerThread`` of a ``RedisBroker``) the subclass.
    Idempotent; call it from ``after_consumer_thread_boot`` (on the thread itself)."""
    if not getattr(type(thread), "_cachify_keeps_delays", False):
        give_subclass(thread, _subclass)


def _enqueue_due(thread: Any) -> None:
    """Enqueue the held messages that are due, as Dramatiq's own ``handle_delayed_messages``,
    except that one whose enqueue fails goes back into the queue: Dramatiq's takes it out
    first, and a broker that cannot be reached (redis-py's own error, not a
    ``BrokerConnectionError``) loses it from memory and then, raised again from the consumer's
    ``close()``, ends the consumer thread for good. Here the error becomes Dramatiq's
    ``ConnectionClosed``: the consumer takes its connection-error path, whose drop is kept above."""
    queue = thread.delay_queue
    while True:  # bounded by the messages held: a message not due yet goes back and ends it
        try:
            item = queue.get_nowait()
        except Empty:
            return
        if item.priority > current_millis():
            queue.put(item)
            queue.task_done()
            return
        message = item.message
        due = message.copy(queue_name=q_name(message.queue_name))
        del due.options["eta"]
        try:
            thread.broker.enqueue(due)
        except BaseException as exc:
            # Only a RedisBroker's threads get here, so redis-py is installed.
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.exceptions import TimeoutError as RedisTimeoutError

            queue.put(item)
            queue.task_done()
            if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
                raise ConnectionClosed(exc) from exc  # type: ignore[no-untyped-call]
            raise
        thread.post_process_message(message)  # acknowledged off the delay queue
        queue.task_done()


def _subclass(base: type[Any]) -> type[Any]:
    def get_queue(self: Any) -> Any:
        return self.__dict__["delay_queue"]

    def set_queue(self: Any, queue: Any) -> None:
        old = self.__dict__.get("delay_queue")
        if old is not None and old is not queue:
            # Bounded by what the old queue holds: nothing puts into it any more.
            dropped = [item.message for item in iter_queue(old)]  # type: ignore[no-untyped-call]
            if dropped:
                self.__dict__.setdefault(_DROPPED, []).extend(dropped)
                logger.warning(
                    "cachify: consumer of %s lost its broker connection holding %d delayed message(s): "
                    "they are requeued once it reconnects",
                    self.queue_name,
                    len(dropped),
                )
        self.__dict__["delay_queue"] = queue

    def handle_delayed_messages(self: Any) -> None:
        dropped = self.__dict__.get(_DROPPED)
        if dropped:
            try:
                self.consumer.requeue(dropped)
            except Exception as exc:  # still unreachable: the next call tries again
                logger.debug(
                    "cachify: requeueing %d dropped delayed message(s) failed: %s", len(dropped), exc
                )
            else:
                logger.warning(
                    "cachify: consumer of %s requeued %d delayed message(s) its lost connection dropped",
                    self.queue_name,
                    len(dropped),
                )
                dropped.clear()
        _enqueue_due(self)

    return type(
        base.__name__,
        (base,),
        {
            "__module__": __name__,
            "_cachify_keeps_delays": True,
            "delay_queue": property(get_queue, set_queue),
            "handle_delayed_messages": handle_delayed_messages,
        },
    )
