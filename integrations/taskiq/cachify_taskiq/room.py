"""Sending a task again under its own id: a requeue after a backoff, and a waiting room's
hand-over. Both go through :func:`resend`, i.e. ``kiq`` with :data:`~.envelope.REPUBLISH_LABEL`,
so ``pre_send`` treats the copy as a re-send (never refused; its dedup hold refreshed to
``once_ttl``, which also gives a parked task's hold its expiry back) and every other
middleware's ``pre_send`` sees it as it sees any message.

A delivery that parks in its pool's waiting room leaves a **payload** there (:func:`payload`):
the message as the broker's formatter writes it — same task id, name, arguments and labels,
``cachify_requeues`` + 1, without a reservation — framed for Taskiq
(:func:`cachify_core.tasks.handover.payload`). Whoever gets the hand-over, in any worker
process, decodes it with the same formatter and kicks it with the entry id in
:data:`~.envelope.RESERVATION_LABEL` (:meth:`Publisher.publish_one`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from taskiq.abc.broker import AsyncBroker
from taskiq.kicker import AsyncKicker
from taskiq.labels import prepare_label
from taskiq.message import TaskiqMessage

from cachify_core.backends.base import Handover
from cachify_core.tasks import handover

from .envelope import DUPLICATE_LABEL, REPUBLISH_LABEL, REQUEUES_LABEL, RESERVATION_LABEL

__all__ = ["FRAMEWORK_TAG", "Publisher", "payload", "resend"]

#: How Taskiq's payloads are framed in a waiting room shared with other frameworks.
FRAMEWORK_TAG = "taskiq"

#: Labels that never travel in a payload: the publisher sets a fresh reservation, and the
#: markers live only between ``pre_send`` and the wrapped ``kick``.
_NOT_CARRIED = (RESERVATION_LABEL, REPUBLISH_LABEL, DUPLICATE_LABEL)


async def resend(broker: AsyncBroker, message: TaskiqMessage, labels: Mapping[str, Any]) -> None:
    """Publish ``message`` again (same task id, arguments and labels), with ``labels`` set on
    top. Raises ``SendTaskError`` when the broker refuses it."""
    kicker: AsyncKicker[Any, Any] = (
        AsyncKicker(task_name=message.task_name, broker=broker, labels=dict(message.labels))
        .with_task_id(message.task_id)
        .with_labels(**labels, **{REPUBLISH_LABEL: True})
    )
    await kicker.kiq(*message.args, **message.kwargs)


def payload(broker: AsyncBroker, message: TaskiqMessage, requeues: int) -> bytes:
    """The waiting-room payload of a delivery of ``message`` that parks: the message any
    worker of this app publishes again, carrying ``requeues`` (the delivery's + 1)."""
    labels = {k: v for k, v in message.labels.items() if k not in _NOT_CARRIED}
    labels[REQUEUES_LABEL] = requeues
    # As Taskiq sends labels: text tagged with its type (a bytes label survives the formatter).
    sent = {k: prepare_label(v) for k, v in labels.items()}
    copy = TaskiqMessage(
        task_id=message.task_id,
        task_name=message.task_name,
        labels={k: text for k, (text, _) in sent.items()},
        labels_types={k: kind for k, (_, kind) in sent.items()},
        args=list(message.args),
        kwargs=dict(message.kwargs),
    )
    return handover.payload(FRAMEWORK_TAG, broker.formatter.dumps(copy).message)


class Publisher:
    """Publishes the hand-overs of waiting rooms through one broker."""

    def __init__(self, broker: AsyncBroker) -> None:
        self.broker = broker

    async def publish_one(self, entry_id: str, body: bytes) -> None:
        """Kick the message in ``body`` (a payload without its frame) reserving ``entry_id``."""
        message = self.broker.formatter.loads(body)
        message.parse_labels()
        await resend(self.broker, message, {RESERVATION_LABEL: entry_id})

    def publish(self, handed: Sequence[Handover]) -> Awaitable[int]:
        """A delivery's ``publish``: the awaitable its ``a``-twins await. Each failure is
        logged and left to the waiting room's sweep."""
        return handover.apublish_all(FRAMEWORK_TAG, handed, self.publish_one)
