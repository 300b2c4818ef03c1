"""``CachifyMiddleware``: Taskiq's hooks translated onto the core's task lifecycle
(:class:`~cachify_core.tasks.Delivery`; its docstring is the table of states and events).

=======================================  ========================================================
Taskiq                                   cachify
=======================================  ========================================================
``pre_send`` (``kiq``, ``kicker()``,     the message's policy (overrides validated, carried in
scheduler kicks, retries, requeues)      ``cachify_options``) and its claim; a duplicate is
                                         marked, the wrapped ``kick`` skips it
``kick`` raises (:mod:`.broker_hooks`)   the claim is given back
``pre_execute``                          a :class:`~cachify_core.tasks.Delivery` begins
the task function (:mod:`.wrapper`)      ``admit``; a ``CachifyPoolFullError`` from the body
                                         is ``raised``
``pre_send`` of the running task's id    ``retrying``: a retry middleware re-sends it
``post_execute`` (after ``on_error``)    ``succeeded`` or ``ended``; a requeue starts its
                                         timer (:mod:`.requeue`)
any event that releases a slot           its hand-overs are kicked at once, reserving their
                                         waiting-room entry (:mod:`.room`)
the delivery's ack                       at once for a parked delivery; held until a requeue's
                                         re-send is published
worker startup / shutdown                the waiting-room sweeper on the worker's loop starts /
                                         stops
the broker's ``listen``                  ``RedisStreamBroker``: deliveries idle past
(:mod:`.broker_hooks`)                   ``idle_timeout`` (a dead worker's) are reclaimed every
                                         tick, without waiting for traffic (:mod:`.reclaim`)
=======================================  ========================================================
"""

from __future__ import annotations

import logging
from typing import Any

from taskiq import InMemoryBroker
from taskiq.abc.broker import AsyncBroker
from taskiq.abc.middleware import TaskiqMiddleware
from taskiq.message import BrokerMessage, TaskiqMessage
from taskiq.result import TaskiqResult
from taskiq.utils import maybe_awaitable

from cachify_core.instance import Cachify
from cachify_core.tasks import Claim, State, TaskPolicy, handover, is_retry_of

from . import broker_hooks, context, envelope, receiver_log, reclaim
from .arguments import worker_arguments
from .broker_hooks import Ack
from .declaration import Declarations
from .envelope import DUPLICATE_LABEL, REPUBLISH_LABEL, RETRIES_LABEL
from .requeue import Requeuer
from .room import FRAMEWORK_TAG, Publisher

__all__ = ["CachifyMiddleware"]

logger = logging.getLogger("cachify.taskiq")

#: What the in-memory backend is refused with when workers are other processes.
FRAMEWORK = "Taskiq"


class CachifyMiddleware(TaskiqMiddleware):
    """Deduplication (``once_*``), concurrency caps (``pool_*``) and result caching (``cache_*``)
    for the tasks of the broker it is added to, declared as ``@broker.task(...)`` labels and
    overridden per message with ``task.kicker().with_labels(...)``.

    ``cachify``: the instance whose backend and prefix are used; the global one from
    ``init_cachify(...)`` by default, looked up when first needed.
    """

    def __init__(self, cachify: Cachify | None = None) -> None:
        super().__init__()
        self._declarations = Declarations(cachify)
        #: Claims taken by ``pre_send`` whose message has not reached ``kick`` yet, by task id. (A
        #: later middleware's ``pre_send`` raising leaves its entry here, and the hold to once_ttl.)
        self._claims: dict[str, tuple[TaskPolicy, Claim]] = {}
        self._requeuer: Requeuer | None = None
        self._publisher: Publisher | None = None
        #: Whether this process started waiting-room sweepers (a worker's startup).
        self._sweeping = False
        #: Whether workers run in this process (InMemoryBroker), so the memory backend will do.
        self._in_process = False

    def set_broker(self, broker: AsyncBroker) -> None:
        super().set_broker(broker)
        self._in_process = isinstance(broker, InMemoryBroker)
        self._declarations.attach(broker)
        broker_hooks.install(broker, self)
        receiver_log.install()
        self._requeuer = Requeuer(broker)
        self._publisher = Publisher(broker)

    async def startup(self) -> None:
        self._declarations.adopt_all()  # tasks declared some other way are validated here at the latest
        if self.broker.is_worker_process and not self._in_process:
            for declaration in self._declarations:
                declaration.policies.declared.require_shared_store(FRAMEWORK)
        self._check_idle_timeout()
        if self.broker.is_worker_process or self._in_process:
            self._start_sweepers()
        if self.broker.is_worker_process:
            reclaimer = reclaim.reclaimer_for(self.broker)  # a bad idle_timeout is refused here
            if reclaimer is not None:
                logger.info(
                    "cachify: deliveries idle over %d ms in %s are reclaimed every %.1fs (at most %d a tick)",
                    reclaimer.idle_ms,
                    ", ".join(reclaimer.streams()),
                    reclaimer.tick_s,
                    reclaimer.batch,
                )

    async def shutdown(self) -> None:
        if self._sweeping:
            self._sweeping = False
            handover.stop_worker_sweepers()
        if self._requeuer is not None:
            await self._requeuer.flush()

    def _start_sweepers(self) -> None:
        """One sweeper on this worker's loop per Cachify instance a pooled or rate-limited task
        uses: it publishes hand-overs whose publish was lost, timed entries when their time
        comes, and moves a queue whose holder died. Nothing on a store without waiting rooms.
        Tasks declared after startup start theirs at their first delivery."""
        for declaration in self._declarations:
            policy = declaration.policies.declared
            if policy.options.uses_waiting_rooms:
                self._ensure_sweeper(policy.cachify)

    def _ensure_sweeper(self, c: Cachify) -> None:
        assert self._publisher is not None
        if handover.start_async_worker_sweeper(c, FRAMEWORK_TAG, self._publisher.publish_one) is not None:
            self._sweeping = True

    def _check_idle_timeout(self) -> None:
        """A delivery held unacknowledged during its backoff longer than the broker's idle timeout
        (``RedisStreamBroker``) would be redelivered to another worker: say so at startup."""
        idle_ms = getattr(self.broker, "idle_timeout", None)
        if not isinstance(idle_ms, int) or isinstance(idle_ms, bool):
            return
        for declaration in self._declarations:
            options = declaration.policies.declared.options
            if options.pool_key is not None and options.pool_backoff_s[1] * 1000 >= idle_ms:
                logger.warning(
                    "cachify: task %s: pool_backoff max %ss is not below the broker's idle_timeout "
                    "(%d ms); a requeue waiting that long may be redelivered to another worker",
                    declaration.name,
                    options.pool_backoff_s[1],
                    idle_ms,
                )

    # -- sending -------------------------------------------------------------------------------
    async def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        requeue = envelope.pop_label(message, REPUBLISH_LABEL) is not None
        declaration = self._declarations.find(message.task_name)
        if declaration is None:
            return message
        policy = declaration.policy_to_send(message)
        if not policy.options.active:
            return message
        if not self._in_process:
            policy.require_shared_store(FRAMEWORK)
        run = context.current()
        delivery = None if run is None else run.delivery
        retry = is_retry_of(delivery, message.task_id)
        if retry:
            assert delivery is not None
            await delivery.aretrying()
        if not policy.options.claims_at_enqueue:
            return message
        resend = retry or requeue or RETRIES_LABEL in message.labels
        args, kwargs = worker_arguments(declaration.signature, message)
        handed_over = envelope.reservation(message.labels) is not None
        claim = await policy.aclaim(
            message.task_id, args, kwargs, resend=resend, dependents=False, handed_over=handed_over
        )
        if claim.duplicate:
            message.labels[DUPLICATE_LABEL] = message.task_id
            message.task_id = claim.holder_id or message.task_id
        else:
            self._claims[message.task_id] = (policy, claim)
        return message

    def before_kick(self, message: BrokerMessage) -> bool:
        return DUPLICATE_LABEL not in message.labels

    async def after_kick(self, message: BrokerMessage, error: Exception | None) -> None:
        claimed = self._claims.pop(message.task_id, None)
        if error is None or claimed is None:
            return
        policy, claim = claimed
        try:
            await policy.aunclaim(message.task_id, claim)  # the contract: a failed publish frees the key
        except Exception as exc:
            logger.error(
                "cachify: task %s[%s]: giving back %s after a failed send failed: %s",
                message.task_name,
                message.task_id,
                claim.key,
                exc,
            )

    # -- running -------------------------------------------------------------------------------
    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        declaration = self._declarations.find(message.task_name)
        if declaration is not None:
            assert self._publisher is not None
            context.begin(context.Run.of(message, declaration, self._publisher))
            policy = declaration.policies.declared
            if policy.options.uses_waiting_rooms and (self.broker.is_worker_process or self._in_process):
                self._ensure_sweeper(policy.cachify)  # once per process and instance
        return message

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        run = context.current()
        if run is None or run.done or run.task_id != message.task_id:
            return
        context.end(run)
        delivery = run.delivery
        if delivery.active:  # (without an option every event is a no-op)
            if delivery.state is State.RECEIVED:
                # Never admitted (its dependencies failed, or a process pool ran it): the claim
                # it gives back is keyed by the arguments it was sent with.
                delivery.args, delivery.kwargs = worker_arguments(run.declaration.signature, message)
            if not result.is_err:
                await delivery.asucceeded(result.return_value)
            await delivery.aended()
        if run.requeue is not None and self._requeuer is not None:
            self._requeuer.start(run.requeue)

    async def acknowledge(self, ack: Ack) -> None:
        run = context.current()
        if run is not None and run.requeue is not None and run.requeue.hold_ack(ack):
            return
        await maybe_awaitable(ack())
