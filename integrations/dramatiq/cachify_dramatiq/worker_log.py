"""Dramatiq's worker logs ``Message … was skipped.`` at WARNING for every ``SkipMessage``.
cachify ends a duplicate, a drop, every park in a pool's waiting room and every requeue that
way, and logs each itself on the ``cachify.tasks`` logger with its reason; under a busy pool
Dramatiq's line would fire once per park or requeue. This filter drops it for the message cachify itself just skipped on that thread only:
a skip by another middleware (``AgeLimit``) or by the actor's body is still logged.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["install", "skipping"]

#: The logger and line of Dramatiq's worker threads (``dramatiq/worker.py``, ``process_message``).
WORKER_LOGGER = "dramatiq.worker.WorkerThread"
SKIPPED_MESSAGE = "Message %s was skipped."


class _Skipping(threading.local):
    message_id: str | None = None


_skipping = _Skipping()


def skipping(message_id: str) -> None:
    """cachify is about to raise ``SkipMessage`` for ``message_id`` on this thread."""
    _skipping.message_id = message_id


class _CachifySkips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != SKIPPED_MESSAGE or not isinstance(record.args, tuple) or not record.args:
            return True
        message_id = getattr(record.args[0], "message_id", None)
        if message_id is None or message_id != _skipping.message_id:
            return True
        _skipping.message_id = None
        return False


_filter = _CachifySkips("cachify")


def install() -> None:
    logger = logging.getLogger(WORKER_LOGGER)
    if _filter not in logger.filters:
        logger.addFilter(_filter)
