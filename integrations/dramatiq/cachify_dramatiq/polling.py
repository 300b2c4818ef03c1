"""The Redis consumer of a waiting-room queue: it fetches at once after this process hands a
slot over on that queue, and otherwise polls an empty queue every ``handover_poll_ms``.

Dramatiq's Redis consumer sleeps between fetches of an empty queue, with a backoff up to the
consumer's timeout, and a waiting room's queue is mostly empty: every task waits in the room,
and a hand-over arrives on the queue when a slot frees. A hand-over published while the
consumers sleep waits out the sleep with its reserved slot idle: measured on one worker with
``handover_poll_ms=10``, a median 5 ms of the 7 ms between one run's end and the next run's
start. The releasing worker has just freed a worker thread, so it is the natural consumer of
its own hand-over: :func:`wake` (called after each hand-over publish) ends this process's
consumers' sleep on that queue at once. Consumers of other processes poll as before.

:func:`watch` gives one consumer thread a subclass whose ``consumer`` (set by Dramatiq's
``ConsumerThread.run``, again after each connection error) gets one too: Dramatiq's own sleep
is turned off (its timeout set to 1 ms, whose backoff rounds to 0) and replaced by a wait of
up to ``poll_ms`` (at most the thread's ``worker_timeout``, Dramatiq's own longest sleep, so
stopping takes no longer) on an event that :func:`wake` sets. The thread's ``worker_timeout``
(its sleep while paused) is left alone. Cost: one ``Event.clear()`` per fetch; nothing on
other queues.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from .subclassing import give_subclass

__all__ = ["polled_every_ms", "wake", "watch"]

#: Consumer instance attributes: the event a hand-over sets, and the longest wait (seconds).
_WAKE, _POLL_S = "_cachify_wake", "_cachify_poll_s"
#: queue name -> this process's watched consumers of it (gone with the consumer).
_consumers: dict[str, weakref.WeakSet[Any]] = {}
_lock = threading.Lock()


def wake(queue_name: str) -> None:
    """A message was just enqueued on ``queue_name`` here: this process's consumers of it fetch
    now instead of finishing their sleep."""
    watched = _consumers.get(queue_name)
    if watched:
        with _lock:  # a consumer thread may be adding its consumer meanwhile
            consumers = list(watched)
        for consumer in consumers:
            getattr(consumer, _WAKE).set()


def polled_every_ms(consumer: Any) -> int:
    """The longest a Redis ``consumer`` waits between fetches of its empty queue (ms)."""
    poll_s = getattr(consumer, _POLL_S, None)
    return int(consumer.timeout) if poll_s is None else round(poll_s * 1000)


def watch(thread: Any, poll_ms: int) -> None:
    """Make ``thread`` (a ``dramatiq.worker.ConsumerThread`` of a ``RedisBroker``) wait at most
    ``poll_ms`` between fetches of its empty queue, and not at all after :func:`wake`. Call it
    from ``after_consumer_thread_boot``, before the thread makes its consumer."""
    give_subclass(thread, _thread_subclass)
    thread._cachify_poll_s = poll_ms / 1000


def _thread_subclass(cls: type[Any]) -> type[Any]:
    def get_consumer(self: Any) -> Any:
        return self.__dict__.get("consumer")

    def set_consumer(self: Any, consumer: Any) -> None:
        self.__dict__["consumer"] = consumer
        if consumer is None or hasattr(consumer, _WAKE):
            return
        give_subclass(consumer, _consumer_subclass)
        setattr(consumer, _WAKE, threading.Event())
        setattr(consumer, _POLL_S, self._cachify_poll_s)
        consumer.timeout = 1  # Dramatiq's backoff capped at 1 ms rounds down to no sleep
        with _lock:
            _consumers.setdefault(consumer.queue_name, weakref.WeakSet()).add(consumer)

    return type(cls.__name__, (cls,), {"consumer": property(get_consumer, set_consumer)})


def _consumer_subclass(cls: type[Any]) -> type[Any]:
    def __next__(self: Any) -> Any:
        woken: threading.Event = getattr(self, _WAKE)
        woken.clear()  # before the fetch: a wake during it ends the wait below at once
        message = super_next(self)
        if message is None:  # an empty fetch (or nothing more may be prefetched)
            woken.wait(getattr(self, _POLL_S))
        return message

    super_next = cls.__next__
    return type(cls.__name__, (cls,), {"__next__": __next__})
