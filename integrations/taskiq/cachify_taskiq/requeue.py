"""Requeue after a backoff: the delivery is released at once, its re-send waits on a timer.

This is the fallback for a full pool: a pool whose waiting room parks the delivery needs none
of it (:mod:`.room`). It serves a full pool that cannot park (``pool_max_waiting``
reached, a store without waiting rooms), a ``CachifyPoolFullError`` raised by the body, and a
store that cannot be reached (``on_store_error="defer"``).

Neither Taskiq nor taskiq-redis delays a message, and sleeping in the task would hold one of
the worker's ``max_async_tasks`` places for the whole backoff. So the run that found its pool
full ends immediately (``NoResultError``: no result stored) and this module re-sends the task,
same task id, ``cachify_requeues`` + 1, from a timer on the worker's event loop, then reports
``requeue_published`` (or ``requeue_failed``) to the delivery.

What keeps the task from being lost is the acknowledgement. On a broker with acks
(``RedisStreamBroker``), the delivery's ack is held back until the re-send is published
(:meth:`PendingRequeue.hold_ack`): if the worker dies during the backoff, the original
message is still pending and the broker delivers it again (``RedisStreamBroker``: once it has
been idle ``idle_timeout``, 10 minutes by default); a crash between the publish and the ack
can duplicate the task, never lose it. A broker without acks (``InMemoryBroker``,
``ListQueueBroker``) has already forgotten a delivered message, so there the pending requeue
lives only in the worker, as any message in flight on such a broker does. At shutdown the
worker publishes its pending requeues at once, without waiting out their backoff.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taskiq.abc.broker import AsyncBroker
from taskiq.utils import maybe_awaitable

from .broker_hooks import Ack
from .room import resend

if TYPE_CHECKING:
    from .context import Run

__all__ = ["PendingRequeue", "Requeuer"]

logger = logging.getLogger("cachify.taskiq")

#: A failed re-send is tried again after 0.5 s, doubling up to this: the broker may be restarting.
MAX_PUBLISH_RETRY_S = 10.0


@dataclass(eq=False)
class PendingRequeue:
    """A requeue decided for one delivery: send it again after the backoff, and acknowledge the
    delivery only once that is done."""

    run: Run
    ack: Ack | None = None  #: the delivery's own ack, held back until the re-send is published
    published: bool = False

    @property
    def delay_s(self) -> float:
        decision = self.run.delivery.decision
        return 0.0 if decision is None else decision.delay_s

    def hold_ack(self, ack: Ack) -> bool:
        """Keep ``ack`` for later; False if the re-send is already out (ack now)."""
        if self.published:
            return False
        self.ack = ack
        return True


class Requeuer:
    """The requeues of one worker process that wait for their backoff or their publish."""

    def __init__(self, broker: AsyncBroker) -> None:
        self._broker = broker
        self._timers: dict[PendingRequeue, asyncio.TimerHandle] = {}
        self._publishing: set[asyncio.Task[None]] = set()
        self._closing = False

    def start(self, pending: PendingRequeue) -> None:
        """Publish ``pending`` after its backoff (called from ``post_execute``)."""
        if self._closing:
            self._publish_now(pending)
            return
        # A fresh context: the timer must not carry the finished run's context along.
        self._timers[pending] = pending.run.loop.call_later(
            pending.delay_s, self._due, pending, context=contextvars.Context()
        )

    def _due(self, pending: PendingRequeue) -> None:
        self._timers.pop(pending, None)
        self._publish_now(pending)

    def _publish_now(self, pending: PendingRequeue) -> None:
        # In a fresh context (``create_task(context=)`` needs Python 3.11).
        task = contextvars.Context().run(pending.run.loop.create_task, self._publish(pending))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, pending: PendingRequeue) -> None:
        run = pending.run
        message, delivery = run.message, run.delivery
        delay_s = 0.5
        while True:
            try:
                # The copy keeps every label, a reservation included: it claims its slot.
                # requeues + 1 (and, deferred by a store error, the name it asked under)
                await resend(self._broker, message, delivery.copy_fields())
                break
            except Exception as exc:
                if self._closing:
                    await self._give_up(pending, exc)
                    return
                logger.warning(
                    "cachify: requeue of task %s[%s] not published (%s); trying again in %.1fs",
                    message.task_name,
                    message.task_id,
                    exc,
                    delay_s,
                )
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, MAX_PUBLISH_RETRY_S)
        delivery.requeue_published()
        pending.published = True
        if pending.ack is not None:
            await maybe_awaitable(pending.ack())

    async def _give_up(self, pending: PendingRequeue, error: Exception) -> None:
        run = pending.run
        if pending.ack is not None:
            # Not acknowledged: the broker delivers the original message again, and that
            # delivery is the holder of what this one kept.
            logger.error(
                "cachify: requeue of task %s[%s] not published at shutdown (%s); left unacknowledged "
                "for the broker to redeliver",
                run.message.task_name,
                run.task_id,
                error,
            )
            return
        logger.warning(
            "cachify: requeue of task %s[%s] not published at shutdown: %s",
            run.message.task_name,
            run.task_id,
            error,
        )
        await run.delivery.arequeue_failed()

    async def flush(self) -> None:
        """Shutdown: publish every waiting requeue now (one attempt each) and wait for them."""
        self._closing = True
        for pending, timer in list(self._timers.items()):
            timer.cancel()
            self._timers.pop(pending, None)
            self._publish_now(pending)
        if self._publishing:
            await asyncio.gather(*self._publishing, return_exceptions=True)
