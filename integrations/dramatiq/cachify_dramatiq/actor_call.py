"""The actor call, wrapped: a delivery is admitted, its body run and its outcome reported inside
``actor.fn``, so what cachify returns instead of running (a cache hit, a ``pool_on_full``
value) is the actor's result as Results, Pipelines and Callbacks see it.

Sync actors drive the delivery's blocking events on the worker thread; ``async def`` actors
run admission, body and outcome as one coroutine on dramatiq's event loop thread. What the
delivery decided is then carried out on the worker thread: return a value, skip, requeue, or
acknowledge a delivery parked in its pool's waiting room (as a requeue, minus the publish).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dramatiq.actor import Actor
from dramatiq.middleware import SkipMessage

from cachify_core.tasks import Admission, Delivery, State, Verdict

from . import requeue, worker_log
from .declaration import DeclaredActor
from .event_loop import on_loop
from .thread_state import Current, ThreadState

__all__ = ["wrap_fn"]


@dataclass(frozen=True)
class Returned:
    """The body ran and returned ``value``."""

    value: Any


def wrap_fn(actor: Actor[Any, Any], declared: DeclaredActor, thread: ThreadState) -> None:
    original = actor.fn

    @functools.wraps(original)
    def run_actor(*args: Any, **kwargs: Any) -> Any:
        current = thread.current
        if (
            current is None
            or current.actor.name != declared.name
            or current.delivery.state is not State.RECEIVED
        ):
            # A direct call of the actor, or a body calling its own actor: a plain call.
            return original(*args, **kwargs)
        fn, delivery = declared.fn, current.delivery
        if declared.is_async:
            outcome = on_loop(declared, _arun(delivery, fn, args, kwargs))
        else:
            outcome = _run(delivery, fn, args, kwargs)
        return _carry_out(current, outcome)

    actor.fn = run_actor


def _run(
    delivery: Delivery, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Admission | Returned:
    decision = delivery.admit()
    if decision.verdict is not Verdict.RUN:
        return decision
    try:
        result = fn(*args, **kwargs)
    except BaseException as error:
        # Retry or failure is Dramatiq's to decide: a retry shows up as the same message id
        # re-enqueued from this thread (``before_enqueue``), anything else at the ack or nack.
        after = delivery.raised(error)
        if after is None:
            raise
        return after
    delivery.succeeded(result)
    return Returned(result)


async def _arun(
    delivery: Delivery, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Admission | Returned:
    decision = await delivery.aadmit()
    if decision.verdict is not Verdict.RUN:
        return decision
    try:
        result = await fn(*args, **kwargs)
    except BaseException as error:
        after = await delivery.araised(error)
        if after is None:
            raise
        return after
    await delivery.asucceeded(result)
    return Returned(result)


def _carry_out(current: Current, outcome: Admission | Returned) -> Any:
    if isinstance(outcome, Returned):
        return outcome.value
    verdict = outcome.verdict
    if verdict is Verdict.CACHED or verdict is Verdict.RETURN:
        return outcome.value
    if verdict is Verdict.REQUEUE:
        requeue.publish(current)
    elif verdict is Verdict.PARKED:
        # The waiting room publishes the copy (same id) when a slot frees for it.
        requeue.no_result(current)
    # SkipMessage: acknowledged with neither success nor failure, so Retries, Callbacks and
    # Pipelines leave the message alone. The delivery has logged why.
    worker_log.skipping(current.message.message_id)
    raise SkipMessage(f"cachify: {verdict.value}: {outcome.reason}")
