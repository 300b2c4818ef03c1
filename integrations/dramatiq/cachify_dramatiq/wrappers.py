"""What the middleware puts around each actor: its function, so a message's run goes through
the policy inside the actor call (a cache hit returned there is the result Results stores), and
its ``send_with_options``, so a duplicate send returns the holder's handle.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from dramatiq.actor import Actor
from dramatiq.message import Message
from dramatiq.middleware import SkipMessage

from cachify_core.tasks import Admission, Claim, TaskPolicy, Verdict

from .errors import CachifyDuplicateMessage
from .options import REQUEUES_OPTION, ActorEntry
from .runs import Returned, Run, State, release_steps, run_steps

__all__ = ["PendingClaim", "ThreadState", "wrap_fn", "wrap_send"]

logger = logging.getLogger("cachify.dramatiq")


@dataclass(frozen=True)
class PendingClaim:
    """A hold claimed by ``before_enqueue`` whose message is not published yet."""

    policy: TaskPolicy
    message_id: str
    claim: Claim


class ThreadState(threading.local):
    """Per thread: the message a worker thread is running, and a send's claim in flight."""

    run: Run | None = None
    claim: PendingClaim | None = None


def wrap_fn(actor: Actor[Any, Any], entry: ActorEntry, thread: ThreadState) -> None:
    original = actor.fn

    @functools.wraps(original)
    def run_actor(*args: Any, **kwargs: Any) -> Any:
        run = thread.run
        if run is None or run.entry.actor_name != entry.actor_name or run.state is not State.PENDING:
            # A direct call of the actor, or a body calling its own actor: plain call.
            return original(*args, **kwargs)
        return _carry_out(run, run.drive(run_steps(run, args, kwargs)))

    actor.fn = run_actor


def _carry_out(run: Run, outcome: Admission | Returned) -> Any:
    """What a run left for the worker thread: the actor's result, a skip, or a requeue."""
    if isinstance(outcome, Returned):
        return outcome.value
    if outcome.verdict in (Verdict.CACHED, Verdict.RETURN):
        return outcome.value
    if outcome.verdict is Verdict.REQUEUE:
        _requeue(run, outcome.delay_s)
    # SkipMessage: acknowledged with neither success nor failure, so Retries, Callbacks and
    # Pipelines leave the message alone.
    raise SkipMessage(f"cachify: {outcome.verdict.value}: {outcome.reason}")


def _requeue(run: Run, delay_s: float) -> None:
    """Send the message back after ``delay_s``, before this delivery is acked: a crash in
    between duplicates it, never loses it. Same id (its hold and its result key carry over),
    ``retries`` untouched, ``cachify_requeues`` + 1."""
    message = run.message
    again = message.copy(options={REQUEUES_OPTION: run.requeues + 1})
    try:
        run.broker.enqueue(again, delay=int(delay_s * 1000))
    except BaseException:
        try:
            run.drive(release_steps(run.policy, run.message_id, message.args, message.kwargs))
        except Exception:
            logger.exception("cachify: releasing the hold of message %s failed", run.message_id)
        raise
    # This delivery is skipped, and Results stores None for a skipped message. The requeued
    # copy has the same id, so that None would be read as its result before it ran: this
    # delivery's own options (the copy has its own) turn storing off.
    message.options["store_results"] = False


def wrap_send(actor: Actor[Any, Any], thread: ThreadState) -> None:
    original = actor.send_with_options

    @functools.wraps(original)
    def send_with_options(
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        delay: timedelta | int | None = None,
        **options: Any,
    ) -> Message[Any]:
        thread.claim = None
        try:
            return original(args=args, kwargs=kwargs, delay=delay, **options)
        except CachifyDuplicateMessage as duplicate:
            if duplicate.once_raise:
                raise
            return duplicate.holder
        except BaseException:
            pending, thread.claim = thread.claim, None
            if pending is not None:  # claimed, then the publish failed: give the hold back
                try:
                    pending.policy.unclaim(pending.message_id, pending.claim)
                except Exception:
                    logger.exception(
                        "cachify: releasing the hold of unsent message %s failed", pending.message_id
                    )
            raise

    # An instance attribute: ``actor.send()`` calls ``self.send_with_options`` and finds it.
    actor.send_with_options = send_with_options  # type: ignore[method-assign]
