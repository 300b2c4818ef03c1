"""``CachifyMiddleware``: Dramatiq's hooks translated onto the core's task policy.

Where each step of docs/TASK_OPTIONS.md happens:

* declare (``before_declare_actor``): options parsed and validated; the actor's function and
  ``send_with_options`` are wrapped (``after_declare_actor``, see :mod:`.wrappers`).
* send (``before_enqueue``): the dedup hold is claimed under the message id. A duplicate
  aborts the enqueue; the wrapped ``send`` turns that into the holder's handle.
* run (the wrapped function): cache check, dedup, pool slot, body, result store — inside the
  actor call, so a cache hit is returned as the actor's result and Results stores it.
* settle: a success finishes in the wrapped function; a failed body finishes when Dramatiq
  has decided — a retry is seen in ``before_enqueue`` (Retries re-enqueues the message from
  the same thread before acking it), anything else at the ack or nack.
"""

from __future__ import annotations

import logging
from typing import Any

from dramatiq.actor import Actor
from dramatiq.broker import Broker, MessageProxy
from dramatiq.common import q_name
from dramatiq.message import Message
from dramatiq.middleware import Middleware, SkipMessage

from cachify_core import Cachify, CachifyError
from cachify_core.steps import Steps
from cachify_core.tasks import OPTION_NAMES, CachifyDuplicateError, Outcome, TaskPolicy

from .errors import CachifyDuplicateMessage, CachifyMessageOptionError, CachifySendError
from .options import CLAIMED_OPTION, REQUEUES_OPTION, ActorEntry, ActorPolicies, is_first_enqueue
from .runs import Run, State, drive, release_steps, settle_steps
from .wrappers import PendingClaim, ThreadState, wrap_fn, wrap_send

__all__ = ["CachifyMiddleware"]

logger = logging.getLogger("cachify.dramatiq")


class CachifyMiddleware(Middleware):
    """Adds ``once_*``, ``pool_*`` and ``cache_*`` options to ``@dramatiq.actor``.

    Add it before any actor is declared. ``cachify`` is the instance to use; the global one
    from ``init_cachify`` (looked up at each use) when omitted.
    """

    def __init__(self, cachify: Cachify | None = None) -> None:
        self._policies = ActorPolicies(cachify)
        self._thread = ThreadState()

    @property
    def actor_options(self) -> set[str]:
        return set(OPTION_NAMES)

    # -- declaration -------------------------------------------------------------------------
    def before_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        # Raised here, as a MiddlewareError, the option error reaches the @dramatiq.actor line.
        self._policies.declare(actor)

    def after_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        # ``add_middleware`` replays this for actors declared before the middleware was added.
        entry = self._policies.entry(actor.actor_name) or self._policies.declare(actor)
        wrap_fn(actor, entry, self._thread)
        wrap_send(actor, self._thread)

    # -- send --------------------------------------------------------------------------------
    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int) -> None:
        entry = self._policies.entry(message.actor_name)
        if entry is None:
            return
        policy = self._policies.policy_for(entry, message.options)
        run = self._thread.run
        if run is not None and run.message_id == message.message_id and run.state is not State.DONE:
            # Retries is sending back the message this thread just ran: the run ends as a
            # retry (slot released, a queued hold kept) before the retry can start anywhere.
            self._settle(run, "retry")
        if policy is None or not policy.options.claims_at_enqueue:
            return
        if is_first_enqueue(message.options):
            self._claim_first(entry, policy, message)
        else:
            self._claim_again(policy, message)

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int) -> None:
        pending = self._thread.claim
        if pending is not None and pending.message_id == message.message_id:
            self._thread.claim = None

    def _claim_first(self, entry: ActorEntry, policy: TaskPolicy, message: Message[Any]) -> None:
        try:
            claim = policy.claim(message.message_id, message.args, message.kwargs)
        except CachifyDuplicateError as exc:  # once_raise=True
            raise CachifyDuplicateMessage(
                exc.task_name, exc.key, _handle(message, exc.holder_id), once_raise=True
            ) from None
        except CachifyError as exc:
            # Dedup fails closed: a message that could not take its hold is not sent.
            raise CachifySendError(f"task {entry.actor_name!r}: message not sent: {exc}") from exc
        if claim.duplicate:
            assert claim.key is not None
            assert claim.holder_id is not None
            raise CachifyDuplicateMessage(
                entry.actor_name, claim.key, _handle(message, claim.holder_id), once_raise=False
            )
        message.options[CLAIMED_OPTION] = True
        self._thread.claim = PendingClaim(policy, message.message_id, claim)

    def _claim_again(self, policy: TaskPolicy, message: Message[Any]) -> None:
        """A retry, requeue or delayed message falling due: refresh the hold, never block it.

        If another message took the key meanwhile (the hold expired), this one is skipped as a
        duplicate when it runs; refusing the enqueue here would lose it.
        """
        try:
            claim = policy.claim(message.message_id, message.args, message.kwargs)
        except CachifyDuplicateError as exc:
            claim_holder: str | None = exc.holder_id
        except CachifyError as exc:
            logger.warning(
                "cachify: re-enqueue of message %s could not refresh its hold: %s", message.message_id, exc
            )
            return
        else:
            claim_holder = claim.holder_id
        if claim_holder is not None:
            logger.info(
                "cachify: message %s re-enqueued while message %s holds its key",
                message.message_id,
                claim_holder,
            )

    # -- run ---------------------------------------------------------------------------------
    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        self._thread.run = None
        entry = self._policies.entry(message.actor_name)
        if entry is None:
            return
        try:
            policy = self._policies.policy_for(entry, message.options)
        except CachifyMessageOptionError as exc:
            # Sent by a producer without this middleware: it can never run as asked.
            logger.error("cachify: message %s rejected: %s", message.message_id, exc)
            message.fail()
            raise SkipMessage(str(exc)) from None
        if policy is not None:
            requeues = int(message.options.get(REQUEUES_OPTION) or 0)
            self._thread.run = Run(message, broker, entry, policy, requeues)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        run = self._thread.run
        if run is not None and run.message_id == message.message_id:
            return  # settled at the ack
        # Skipped before this middleware saw it (e.g. AgeLimit): its hold will not be used.
        entry = self._policies.entry(message.actor_name)
        try:
            policy = None if entry is None else self._policies.policy_for(entry, message.options)
            if entry is not None and policy is not None:
                drive(entry, policy, release_steps(policy, message.message_id, message.args, message.kwargs))
        except CachifyMessageOptionError:
            pass  # rejected in before_process_message: it never had a hold
        except Exception:
            logger.exception("cachify: releasing the hold of skipped message %s failed", message.message_id)

    def after_ack(self, broker: Broker, message: MessageProxy) -> None:
        self._after_run(message)

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        self._after_run(message)

    def _after_run(self, message: MessageProxy) -> None:
        run = self._thread.run
        if run is None or run.message_id != message.message_id:
            return  # not this thread's run (e.g. the consumer acking a delayed message it moved)
        self._thread.run = None
        if run.state is not State.DONE:
            # Not a retry (that was settled at its enqueue): the task failed or was dropped.
            self._settle(run, "failure")

    def _settle(self, run: Run, outcome: Outcome) -> None:
        steps: Steps[None] = settle_steps(run, outcome)
        try:
            run.drive(steps)
        except Exception:
            # Hooks must not fail the message over bookkeeping; what was not released ends by TTL.
            logger.exception("cachify: releasing message %s (%s) failed", run.message_id, outcome)


def _handle(message: Message[Any], holder_id: str) -> Message[Any]:
    """A handle on the holding message: Results finds a result by queue, actor and id."""
    return message.copy(message_id=holder_id, queue_name=q_name(message.queue_name))
