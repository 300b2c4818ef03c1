"""Hand-overs go to the consuming end of a Redis queue, not behind its backlog.

A hand-over's task has a slot reserved for it (or, for a rate limit, its time has come): until
its message is delivered, that slot idles. Published the ordinary way, kombu's Redis transport
pushes it at the far end of the queue (``LPUSH``; workers ``BRPOP`` from the other end), so it
waits behind every message already queued — at a worker's start, hundreds of tasks that will
only park again. Inside :func:`at_front`, a publish on kombu's Redis transport pushes to the
consuming end instead (``RPUSH``, the same key and priority list kombu would use): the next
``BRPOP`` of any worker takes it.

This is one of the two places cachify reaches into kombu (the other: :mod:`.pool_order`): the Redis channel's ``_put`` is wrapped once
per process (:func:`install`). The wrapper changes nothing outside :func:`at_front`, nor for
publish batches and queues with an expiry (kombu's own path); if kombu's Redis channel lacks
what it uses (a kombu release that renamed it), nothing is wrapped and hand-overs are
published at the far end, as any message. Other transports (RabbitMQ: a queue is consumed in
order, and priorities need ``x-max-priority`` queues) publish the ordinary way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["at_front", "install"]

logger = logging.getLogger("cachify.celery")

_state = threading.local()
_lock = threading.Lock()
_installed = False

#: What the wrapper uses of ``kombu.transport.redis.Channel``.
_NEEDS = ("_put", "_q_for_pri", "_get_message_priority", "conn_or_acquire")


def _front() -> bool:
    return bool(getattr(_state, "front", False))


@contextlib.contextmanager
def at_front() -> Iterator[None]:
    """Publishes made by this thread meanwhile go to the consuming end of a Redis queue."""
    before = _front()
    _state.front = True
    try:
        yield
    finally:
        _state.front = before


def install() -> bool:
    """Wrap kombu's Redis channel ``_put`` (once per process); whether it is wrapped."""
    global _installed
    with _lock:
        if _installed:
            return True
        try:
            from kombu.transport import redis as kombu_redis
            from kombu.utils.json import dumps
        except ImportError:  # kombu without its Redis transport: nothing to wrap
            return False
        channel: Any = kombu_redis.Channel
        encode: Any = dumps
        missing = [name for name in _NEEDS if not hasattr(channel, name)]
        if missing:
            logger.warning(
                "cachify: kombu's Redis channel has no %s: hand-overs are queued behind other messages",
                ", ".join(missing),
            )
            return False
        ordinary: Any = channel._put

        def _put(self: Any, queue: str, message: Any, **kwargs: Any) -> Any:
            if (
                not _front()
                or kwargs.get("_publish_batch") is not None
                or queue in (getattr(self, "_expires", None) or {})
            ):
                return ordinary(self, queue, message, **kwargs)
            key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
            with self.conn_or_acquire() as client:
                client.rpush(key, encode(message))
            return None

        channel._put = _put
        _installed = True
        return True
