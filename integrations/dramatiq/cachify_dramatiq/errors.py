"""Exceptions of the Dramatiq integration.

Dramatiq logs and swallows any exception a ``before_*`` hook raises unless it is a
``MiddlewareError``, so every error that must reach the caller of ``@dramatiq.actor`` or
``send()`` (or stop ``dramatiq`` from starting) is a ``MiddlewareError`` as well as the core's
exception for the same problem: callers catch it by the core name (``CachifyTaskOptionError``,
``CachifyDuplicateError``, ``CachifyInitError``).
"""

from __future__ import annotations

from typing import Any

from dramatiq.message import Message
from dramatiq.middleware import MiddlewareError

from cachify_core import CachifyError, CachifyInitError
from cachify_core.tasks import CachifyDuplicateError, CachifyTaskOptionError

__all__ = ["CachifyDuplicateMessage", "CachifyMessageOptionError", "CachifySendError", "CachifySetupError"]


class CachifyMessageOptionError(CachifyTaskOptionError, MiddlewareError):
    """An actor's or a message's cachify option is unknown, incomplete or has a bad value."""


class CachifyDuplicateMessage(CachifyDuplicateError, MiddlewareError):
    """A message was sent while another message holds its ``once_key``; nothing was enqueued.

    ``holder`` is a handle on the holding message (same actor and queue, the holder's
    ``message_id``), so ``holder.get_result()`` waits for the holder's result. ``actor.send()``
    and ``actor.send_with_options()`` return ``holder`` instead of raising unless the actor has
    ``once_raise=True``; an enqueue that others wait for (pipelines, groups, a plain
    ``broker.enqueue()``) always raises.
    """

    def __init__(self, task_name: str, key: str, holder: Message[Any], once_raise: bool) -> None:
        super().__init__(task_name, key, holder.message_id)
        self.holder = holder
        self.once_raise = once_raise


class CachifySendError(CachifyError, MiddlewareError):
    """A message's dedup hold could not be taken (backend unreachable, key template not fitting
    the arguments); the message was not sent. The core's exception is chained as ``__cause__``."""


class CachifySetupError(CachifyInitError, MiddlewareError):
    """cachify cannot work as configured: the embedded in-memory backend with workers in other
    processes (raised at send and when a worker boots), or an async actor without ``AsyncIO``."""
