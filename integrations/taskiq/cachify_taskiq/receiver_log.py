"""Taskiq's receiver logs a WARNING for every run that ends in ``NoResultError``. cachify ends a
duplicate, a drop and every requeue that way (and logs them itself, at INFO), so under a busy
pool that warning would fire for each requeue. This filter drops it for cachify's own skips
only: the log call happens in the delivery's asyncio task, where :func:`.context.current` tells
whose ``NoResultError`` it was. A task body raising ``NoResultError`` is still logged.
"""

from __future__ import annotations

import logging

from . import context

__all__ = ["install"]

#: The logger and message of Taskiq's receiver (``taskiq/receiver/receiver.py``, ``run_task``).
RECEIVER_LOGGER = "taskiq.receiver.receiver"
SKIPPED_MESSAGE = "skipped setting result"


class _CachifySkips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or SKIPPED_MESSAGE not in str(record.msg):
            return True
        run = context.current()
        return run is None or not run.skipped


_filter = _CachifySkips("cachify")


def install() -> None:
    logger = logging.getLogger(RECEIVER_LOGGER)
    if _filter not in logger.filters:
        logger.addFilter(_filter)
