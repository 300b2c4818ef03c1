"""``CachifyMiddleware``: Taskiq's hooks translated onto the shared task policy.

Where each step of the contract (docs/TASK_OPTIONS.md) happens:

=================================  =============================================================
claim the dedup hold at ``kiq``    ``pre_send`` (a duplicate is marked; the wrapped ``kick``
                                   skips it and ``kiq`` returns the holder's handle)
give it back if the publish fails  the wrapped ``kick`` (:mod:`.broker_hooks`)
cache check → dedup → pool slot    the task function's wrapper (:mod:`.wrapper`), where a run
                                   can be skipped or answered without running its body
store result, release slot, hold   ``post_execute``, after ``on_error`` so that a retry re-sent
                                   by a retry middleware keeps its task's hold
requeue after a backoff            a timer of this middleware (:mod:`.requeue`); the delivery's
                                   ack waits for the re-send
=================================  =============================================================
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from taskiq.abc.broker import AsyncBroker
from taskiq.abc.middleware import TaskiqMiddleware
from taskiq.message import BrokerMessage, TaskiqMessage
from taskiq.result import TaskiqResult
from taskiq.utils import maybe_awaitable

from cachify_core.instance import Cachify
from cachify_core.tasks import CachifyDuplicateError, Claim, TaskPolicy

from . import broker_hooks, receiver_log, runs
from .arguments import worker_arguments
from .broker_hooks import Ack
from .declaration import Declarations
from .labels import DUPLICATE_LABEL, REPUBLISH_LABEL
from .requeue import Requeuer

__all__ = ["CachifyMiddleware"]

logger = logging.getLogger("cachify.taskiq")


class CachifyMiddleware(TaskiqMiddleware):
    """Deduplication (``once_*``), concurrency caps (``pool_*``) and result caching (``cache_*``)
    for the tasks of the broker it is added to, declared as ``@broker.task(...)`` labels.

    ``cachify``: the instance whose backend and prefix are used; the global one from
    ``init_cachify(...)`` by default, looked up when first needed.
    """

    def __init__(self, cachify: Cachify | None = None) -> None:
        super().__init__()
        self._declarations = Declarations(cachify)
        #: Holds claimed by ``pre_send`` whose message has not reached ``kick`` yet, by task id. (A
        #: later middleware's ``pre_send`` raising leaves its entry here, and the hold to once_ttl.)
        self._claims: dict[str, tuple[TaskPolicy, Claim]] = {}
        self._requeuer: Requeuer | None = None

    def set_broker(self, broker: AsyncBroker) -> None:
        super().set_broker(broker)
        self._declarations.attach(broker)
        broker_hooks.install(broker, self)
        receiver_log.install()
        self._requeuer = Requeuer(broker)

    async def startup(self) -> None:
        self._declarations.adopt_all()  # tasks declared some other way are validated here at the latest
        self._check_idle_timeout()

    async def shutdown(self) -> None:
        if self._requeuer is not None:
            await self._requeuer.flush()

    def _check_idle_timeout(self) -> None:
        """A delivery held unacknowledged during its backoff longer than the broker's idle timeout
        (``RedisStreamBroker``) would be redelivered to another worker: say so at startup."""
        idle_ms = getattr(self.broker, "idle_timeout", None)
        if not isinstance(idle_ms, int) or isinstance(idle_ms, bool):
            return
        for declaration in self._declarations:
            options = declaration.policy.options
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
        if message.labels.pop(REPUBLISH_LABEL, None) is not None:
            return message  # our own requeue: the policy kept this task id's hold
        run = runs.current()
        retry = run is not None and not run.done and run.task_id == message.task_id
        if retry:
            assert run is not None
            run.retried = True  # re-sent from on_error: its hold is kept at finish
        declaration = self._declarations.find(message.task_name)
        if declaration is None or not declaration.policy.options.claims_at_enqueue:
            return message
        policy = declaration.policy
        args, kwargs = worker_arguments(declaration.signature, message)
        try:
            claim = await policy.aclaim(message.task_id, args, kwargs)
        except CachifyDuplicateError:
            if not retry:
                raise
            return message  # a retry is never dropped as a duplicate: its caller waits for it
        if not claim.duplicate:
            self._claims[message.task_id] = (policy, claim)
        elif not retry:
            message.labels[DUPLICATE_LABEL] = message.task_id
            message.task_id = claim.holder_id or message.task_id
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
        except Exception:
            logger.exception(
                "cachify: releasing %s after a failed send of %s failed", claim.key, message.task_id
            )

    # -- running -------------------------------------------------------------------------------
    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        declaration = self._declarations.find(message.task_name)
        if declaration is not None:
            runs.begin(runs.Run(message, declaration, asyncio.get_running_loop()))
        return message

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        run = runs.current()
        if run is None or run.done or run.task_id != message.task_id:
            return
        runs.end(run)
        policy = run.declaration.policy
        try:
            if run.handle is not None:
                await policy.afinish(run.handle, run.finish_outcome(result.is_err), result.return_value)
            elif run.release_hold and not run.retried:
                await policy.arelease_requeued(run.task_id, run.args, run.kwargs)
        except Exception:
            # Raising here would leave the delivery unacknowledged; the TTLs end what was held.
            logger.exception(
                "cachify: releasing what task %s[%s] held failed", message.task_name, run.task_id
            )
        if run.requeue is not None and self._requeuer is not None:
            self._requeuer.start(run.requeue)

    async def acknowledge(self, ack: Ack) -> None:
        run = runs.current()
        if run is not None and run.requeue is not None and run.requeue.hold_ack(ack):
            return
        await maybe_awaitable(ack())
