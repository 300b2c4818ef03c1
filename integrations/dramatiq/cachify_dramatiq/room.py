"""A full pool's waiting room, as Dramatiq messages (:mod:`cachify_core.tasks.handover`).

* :func:`payload`: what a parked delivery leaves in the room — the message it was, encoded,
  ``cachify_requeues`` + 1, without the reservation it may carry (the publisher sets the new
  one). Same message id, queue and ``retries``: the copy is the same task, not a retry.
* :func:`publisher` / :func:`publish_one`: a hand-over goes out through the broker at once, as
  the decoded message carrying ``cachify_reservation`` = its entry id. ``broker.enqueue``
  passes ``before_enqueue``, where the copy (``cachify_requeues`` >= 1) is a re-send of its
  holder, never a duplicate of itself. From an async actor's events (dramatiq's event loop
  thread), the blocking enqueue runs in a thread of the loop's default executor.
* :func:`start_sweepers` / :func:`stop_sweepers`: one sweeper per worker process and Cachify
  instance, publishing through the broker the worker consumes from.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.message import Message

from cachify_core import Cachify
from cachify_core.backends.base import Handover
from cachify_core.leases import Periodic
from cachify_core.tasks import RESERVATION_FIELD, Publish, handover, read_reservation

from . import polling
from .envelope import REQUEUES_OPTION

__all__ = [
    "FRAMEWORK",
    "payload",
    "publish_one",
    "publisher",
    "reservation",
    "start_sweepers",
    "stop_sweepers",
]

#: How payloads of this integration are framed in a shared store.
FRAMEWORK = "dramatiq"


def reservation(message: Message[Any] | MessageProxy) -> str | None:
    """The waiting-room entry a handed-over message carries; ``None`` on any other."""
    return read_reservation(message.options.get(RESERVATION_FIELD))


def payload(message: Message[Any] | MessageProxy, requeues: int) -> bytes:
    """``message`` as the waiting room keeps it: published again by whoever frees a slot."""
    again = message.copy(options={REQUEUES_OPTION: requeues + 1})
    again.options.pop(RESERVATION_FIELD, None)  # the copy's own dict: the delivery keeps its own
    return handover.payload(FRAMEWORK, again.encode())


def publish_one(broker: Broker, entry_id: str, body: bytes) -> None:
    """Enqueue the message ``body`` encodes, handed the slot reserved for ``entry_id``."""
    message = Message.decode(body).copy(options={RESERVATION_FIELD: entry_id})
    broker.enqueue(message)
    polling.wake(message.queue_name)  # this process's consumer takes it now (its worker is free)


def publisher(broker: Broker, is_async: bool) -> Publish:
    """A delivery's ``publish``: blocking for a sync actor's events; for an async actor's (on
    the event loop), an awaitable that enqueues off the loop."""
    one = functools.partial(publish_one, broker)
    if not is_async:
        return lambda handed: handover.publish_all(FRAMEWORK, handed, one)

    async def off_loop(entry_id: str, body: bytes) -> None:
        await asyncio.to_thread(one, entry_id, body)

    def publish(handed: Sequence[Handover]) -> Awaitable[int]:
        return handover.apublish_all(FRAMEWORK, handed, off_loop)

    return publish


def start_sweepers(broker: Broker, instances: Iterable[Cachify]) -> list[Periodic]:
    """Start this process's sweeper of each instance (nothing on stores without waiting rooms);
    the ones running."""
    one = functools.partial(publish_one, broker)
    started = [handover.start_worker_sweeper(c, FRAMEWORK, one) for c in instances]
    return [s for s in started if s is not None]


def stop_sweepers() -> None:
    handover.stop_worker_sweepers()
