"""What a thread is doing, as the middleware's hooks and the wrapped actor calls share it: the
message a worker thread is processing, and a send in flight on any thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from dramatiq.broker import Broker, MessageProxy

from cachify_core.tasks import Claim, Delivery, TaskPolicy

from .declaration import DeclaredActor

__all__ = ["Current", "PendingClaim", "ThreadState"]


@dataclass
class Current:
    """The message a worker thread is processing, from ``before_process_message`` to its ack."""

    message: MessageProxy
    broker: Broker
    actor: DeclaredActor
    delivery: Delivery


@dataclass(frozen=True)
class PendingClaim:
    """A hold taken in ``before_enqueue`` whose message is not published yet."""

    policy: TaskPolicy
    message_id: str
    claim: Claim


class ThreadState(threading.local):
    current: Current | None = None
    #: Set by the wrapped ``send_with_options`` for the enqueue it is about to make: a duplicate
    #: of that one can be answered with the holder's handle.
    sending: bool = False
    pending: PendingClaim | None = None
