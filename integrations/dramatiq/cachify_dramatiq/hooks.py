"""``CachifyMiddleware``: Dramatiq's hooks translated onto the core's task lifecycle
(:mod:`cachify_core.tasks.delivery`).

==============================  ======================================================
Dramatiq                        cachify
==============================  ======================================================
``before_declare_actor``        options validated (:mod:`.declaration`)
``after_declare_actor``         ``actor.fn`` and ``send_with_options`` wrapped
``before_worker_boot``          the store must be shared with the workers
``after_worker_boot``           the process's waiting-room sweepers start (:mod:`.room`)
``before_worker_shutdown``      ... and stop
``after_consumer_thread_boot``  a Redis consumer of a queue with waiting-room actors polls
                                its empty queue every ``handover_poll_ms`` at the longest,
                                and at once after a hand-over here (:mod:`.polling`);
                                every Redis consumer keeps the delayed messages a broken
                                connection drops (:mod:`.delays`)
``before_enqueue``              overrides validated; the claim (``TaskPolicy.claim``); the
                                same message re-enqueued from its worker thread → ``retrying``
``before_process_message``      a :class:`~cachify_core.tasks.Delivery` is made
the actor call                  ``admit`` → body → ``succeeded`` / ``raised`` (:mod:`.actor_call`)
``after_skip_message``          ``abandoned`` (skipped before it ran, e.g. by ``AgeLimit``)
``after_ack``/``after_nack``    ``ended``
==============================  ======================================================
"""

from __future__ import annotations

import logging
from typing import Any

from dramatiq.actor import Actor
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, q_name
from dramatiq.message import Message
from dramatiq.middleware import Middleware, SkipMessage
from dramatiq.worker import Worker

from cachify_core import Cachify, CachifyError, CachifyInitError
from cachify_core.tasks import (
    OPTION_NAMES,
    CachifyDuplicateError,
    Delivery,
    State,
    TaskPolicy,
    is_retry_of,
    logs,
)

from . import delays, envelope, event_loop, polling, room, worker_log
from .actor_call import wrap_fn
from .declaration import DeclaredActor, declare
from .errors import CachifyDuplicateMessage, CachifyMessageOptionError, CachifySendError, CachifySetupError
from .event_loop import drive
from .sending import wrap_send
from .thread_state import Current, PendingClaim, ThreadState

__all__ = ["CachifyMiddleware"]


class CachifyMiddleware(Middleware):
    """Adds ``once_*``, ``pool_*`` and ``cache_*`` options to ``@dramatiq.actor``.

    Add it before any actor is declared. ``cachify`` is the instance to use; the global one
    from ``init_cachify`` (looked up at each use) when omitted.

    ``handover_poll_ms`` (default 10; ``None`` leaves Dramatiq's own): the longest a Redis
    broker's consumer of a queue whose actors use a waiting room (``pool_key``, ``rate_*``)
    sleeps between polls of an empty queue. Dramatiq's own is ``dramatiq_worker_timeout``
    (1000 ms), and with a waiting room such a queue is mostly empty: a hand-over, whose slot is
    reserved and idle, would wait for that poll. A hand-over published in the worker's own
    process wakes its consumer at once (:mod:`.polling`): the worker that freed the slot has a
    free thread for it. The cost is one fetch per consumer per ``handover_poll_ms`` while its
    queue is empty. Other queues, delay queues and other brokers (RabbitMQ pushes) are left as
    they are.
    """

    def __init__(self, cachify: Cachify | None = None, handover_poll_ms: int | None = 10) -> None:
        if handover_poll_ms is not None and (
            isinstance(handover_poll_ms, bool)
            or not isinstance(handover_poll_ms, int)
            or handover_poll_ms < 1
        ):
            raise CachifySetupError(
                f"CachifyMiddleware(handover_poll_ms={handover_poll_ms!r}): give whole milliseconds "
                ">= 1, or None to keep dramatiq_worker_timeout"
            )
        self._poll_ms = handover_poll_ms
        self._cachify = cachify
        self._actors: dict[str, DeclaredActor] = {}
        self._thread = ThreadState()
        worker_log.install()

    @property
    def actor_options(self) -> set[str]:
        return set(OPTION_NAMES)

    # -- declaration and boot ----------------------------------------------------------------
    def before_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        # Raised here, as a MiddlewareError, the option error reaches the @dramatiq.actor line.
        self._actors[actor.actor_name] = declare(actor, self._cachify)

    def after_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        # ``add_middleware`` replays this for actors declared before the middleware was added.
        declared = self._actors.get(actor.actor_name)
        if declared is None:
            declared = self._actors[actor.actor_name] = declare(actor, self._cachify)
        wrap_fn(actor, declared, self._thread)
        wrap_send(actor, self._thread)

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        # A MiddlewareError here propagates out of Worker.start(): the ``dramatiq`` worker
        # process exits, and its main process stops the others and exits non-zero.
        if isinstance(broker, StubBroker):
            return
        try:
            for actor in self._actors.values():
                if actor.policies.active:
                    _require_shared_store(actor.policies.declared)
        except CachifySetupError:
            event_loop.stop_early()  # else its thread (not a daemon) keeps the process alive
            raise

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        # One sweeper per worker process and instance: it publishes hand-overs whose publish
        # was lost and moves a room's line when a dead worker's slot expires.
        room.start_sweepers(broker, self._instances())

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        room.stop_sweepers()

    def after_consumer_thread_boot(self, broker: Broker, thread: Any) -> None:
        # Called before the thread's first consume(timeout=thread.worker_timeout).
        if type(broker).__name__ != "RedisBroker":
            return
        delays.keep(thread)  # delayed messages (deferrals too) survive a broker restart
        poll = self._poll_ms
        if poll is not None and thread.queue_name in self._waiting_room_queues(broker):
            polling.watch(thread, min(poll, thread.worker_timeout))  # a hand-over wakes it

    def _waiting_room_queues(self, broker: Broker) -> set[str]:
        """The queues (not their delay queues) of the actors that can park in a waiting room."""
        queues: set[str] = set()
        for name, actor in self._actors.items():
            if actor.policies.declared.options.uses_waiting_rooms and name in broker.actors:
                queues.add(broker.get_actor(name).queue_name)
        return queues - {dq_name(q) for q in queues}

    def _instances(self) -> list[Cachify]:
        """The distinct Cachify instances the actors with options use."""
        found: dict[int, Cachify] = {}
        if self._cachify is not None:
            found[id(self._cachify)] = self._cachify
        for actor in self._actors.values():
            if actor.policies.active:
                c = actor.policies.declared.cachify
                found.setdefault(id(c), c)
        return list(found.values())

    # -- send --------------------------------------------------------------------------------
    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int) -> None:
        sending, self._thread.sending = self._thread.sending, False
        actor = self._actors.get(message.actor_name)
        if actor is None:
            return
        current = self._thread.current
        if current is not None and current.message.message_id == message.message_id:
            delivery = current.delivery
            if delivery.state is State.REQUEUING:
                return  # cachify's own requeue: the copy carries the delivery's hold on
            if is_retry_of(delivery, message.message_id):
                # Retries sending back the message this thread just ran: the run ends as a
                # retry (slot released, a queued hold kept) before the retry can start anywhere.
                drive(actor, delivery.retrying, delivery.aretrying)
        policy = actor.policy_for(envelope.take_overrides(message.options))
        if not policy.options.active:
            return
        if not isinstance(broker, StubBroker):
            _require_shared_store(policy)
        if policy.options.claims_at_enqueue:
            self._claim(actor, policy, message, sending)

    def _claim(self, actor: DeclaredActor, policy: TaskPolicy, message: Message[Any], sending: bool) -> None:
        options = message.options
        # Only an actor's own send has a handle to return for a duplicate; other work waits
        # for anything else (a group, a pipeline), so its duplicate raises instead.
        dependents = not sending or envelope.in_composition(options)
        try:
            claim = policy.claim(
                message.message_id,
                message.args,
                message.kwargs,
                resend=not envelope.is_first_enqueue(options),
                dependents=dependents,
                handed_over=room.reservation(message) is not None,
            )
        except CachifyDuplicateError as exc:  # once_raise=True, or dependents
            raise CachifyDuplicateMessage(
                exc.task_name, exc.key, _handle(message, exc.holder_id), once_raise=True
            ) from None
        except CachifyError as exc:
            # Dedup fails closed: a message that could not take its hold is not sent.
            raise CachifySendError(f"task {actor.name!r}: message not sent: {exc}") from exc
        if claim.duplicate:
            assert claim.key is not None
            assert claim.holder_id is not None
            raise CachifyDuplicateMessage(
                actor.name, claim.key, _handle(message, claim.holder_id), once_raise=False
            )
        options[envelope.CLAIMED_OPTION] = True
        self._thread.pending = PendingClaim(policy, message.message_id, claim)

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int) -> None:
        pending = self._thread.pending
        if pending is not None and pending.message_id == message.message_id:
            self._thread.pending = None

    # -- run ---------------------------------------------------------------------------------
    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        self._thread.current = None
        actor = self._actors.get(message.actor_name)
        if actor is None:
            return
        try:
            policy = actor.policy_for(envelope.take_overrides(message.options))
        except CachifyMessageOptionError as exc:
            # Sent by a producer without this middleware: it can never run as asked.
            logs.skipped(actor.name, message.message_id, f"rejected: {exc}", logging.ERROR)
            message.fail()
            worker_log.skipping(message.message_id)
            raise SkipMessage(str(exc)) from None
        if policy.options.active:
            requeues = envelope.requeues(message.options)
            delivery = Delivery(
                policy,
                message.message_id,
                message.args,
                message.kwargs,
                requeues,
                reservation=room.reservation(message),
                payload=lambda: room.payload(message, requeues),
                publish=room.publisher(broker, actor.is_async),
                park_id=envelope.park_id(message.message_id, message.options),
            )
            self._thread.current = Current(message, broker, actor, delivery)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        current = self._take(message)
        if current is not None:
            _end(current.actor, current.delivery)
            return
        # Skipped before this middleware saw it (e.g. by AgeLimit): its claim will not be used.
        actor = self._actors.get(message.actor_name)
        if actor is None:
            return
        try:
            policy = actor.policy_for(envelope.take_overrides(message.options))
        except CachifyMessageOptionError:
            return  # rejected in before_process_message: it never had a claim
        if policy.options.active:
            reservation = room.reservation(message)
            delivery = Delivery(
                policy,
                message.message_id,
                message.args,
                message.kwargs,
                reservation=reservation,
                publish=room.publisher(broker, actor.is_async),  # its slot goes on at once
            )
            _end(actor, delivery)

    def after_ack(self, broker: Broker, message: MessageProxy) -> None:
        current = self._take(message)
        if current is not None:
            _end(current.actor, current.delivery)

    after_nack = after_ack

    def _take(self, message: MessageProxy) -> Current | None:
        """This thread's delivery of ``message``, now over (a consumer thread acking a delayed
        message it moved has none)."""
        current = self._thread.current
        if current is None or current.message.message_id != message.message_id:
            return None
        self._thread.current = None
        return current


def _end(actor: DeclaredActor, delivery: Delivery) -> None:
    if delivery.state is not State.ENDED:
        drive(actor, delivery.ended, delivery.aended)


def _require_shared_store(policy: TaskPolicy) -> None:
    try:
        policy.require_shared_store("Dramatiq")
    except CachifyInitError as exc:
        raise CachifySetupError(str(exc)) from None


def _handle(message: Message[Any], holder_id: str) -> Message[Any]:
    """A handle on the holding message: Results finds a result by queue, actor and id."""
    return message.copy(message_id=holder_id, queue_name=q_name(message.queue_name))
