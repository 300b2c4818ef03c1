"""One message's run through the task policy: admit, run the body, finish — written once as
steps (``cachify_core.steps``) and driven blocking for a sync actor or on dramatiq's event loop
for an ``async def`` actor, so async actors use the policy's asyncio twins and their leases
are renewed by tasks on that loop.

What a run leaves for the worker thread (return a value, skip, requeue) is carried out by the
middleware; what it leaves open (a failed body's slot and hold) is settled by the hooks once
Dramatiq has decided between retry and failure.
"""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dramatiq.asyncio import get_event_loop_thread
from dramatiq.broker import Broker, MessageProxy

from cachify_core import CachifyPoolFullError
from cachify_core.steps import Steps, run_async, run_blocking
from cachify_core.tasks import Admission, Outcome, RunHandle, TaskPolicy, Verdict

from .options import ActorEntry

__all__ = ["Returned", "Run", "State", "drive", "release_steps", "run_steps", "settle_steps"]

logger = logging.getLogger("cachify.dramatiq")

T = TypeVar("T")


class State(enum.Enum):
    PENDING = "pending"  #: not admitted yet (or admission raised): only the enqueue-time hold
    RUNNING = "running"  #: admitted: ``handle`` holds a slot and/or hold until settled
    DONE = "done"  #: nothing left to release


@dataclass
class Run:
    """The message a worker thread is processing, from ``before_process_message`` to its ack."""

    message: MessageProxy
    broker: Broker
    entry: ActorEntry
    policy: TaskPolicy
    requeues: int
    state: State = State.PENDING
    handle: RunHandle | None = field(default=None, repr=False)

    @property
    def message_id(self) -> str:
        return self.message.message_id

    def drive(self, steps: Steps[T]) -> T:
        return drive(self.entry, self.policy, steps)


@dataclass(frozen=True)
class Returned:
    """The body ran and returned ``value``."""

    value: Any


class BlockingCalls:
    """Every call with I/O a run makes, for a sync actor (sync backend, worker thread)."""

    def __init__(self, policy: TaskPolicy, fn: Callable[..., Any]) -> None:
        self.policy, self.fn = policy, fn

    def admit(
        self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], requeues: int
    ) -> Admission:
        return self.policy.admit(task_id, args, kwargs, requeues)

    def call(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        return self.fn(*args, **kwargs)

    def finish(self, handle: RunHandle, outcome: Outcome, result: Any = None) -> None:
        self.policy.finish(handle, outcome, result)

    def release(self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        self.policy.release_requeued(task_id, args, kwargs)

    def resolve(self, value: Any) -> Any:
        return value


class AsyncioCalls:
    """The same calls for an ``async def`` actor: asyncio twins, awaited on dramatiq's loop."""

    def __init__(self, policy: TaskPolicy, fn: Callable[..., Any]) -> None:
        self.policy, self.fn = policy, fn

    async def admit(
        self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], requeues: int
    ) -> Admission:
        return await self.policy.aadmit(task_id, args, kwargs, requeues)

    async def call(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        return await self.fn(*args, **kwargs)

    async def finish(self, handle: RunHandle, outcome: Outcome, result: Any = None) -> None:
        await self.policy.afinish(handle, outcome, result)

    async def release(self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        await self.policy.arelease_requeued(task_id, args, kwargs)

    async def resolve(self, value: Any) -> Any:
        # An async ``pool_on_full`` callable gives a coroutine: its result is the task's.
        return await value if inspect.isawaitable(value) else value


def drive(entry: ActorEntry, policy: TaskPolicy, steps: Steps[T]) -> T:
    """Run ``steps`` from a worker thread: blocking, or on the event loop for an async actor."""
    if not entry.is_async:
        return run_blocking(steps, BlockingCalls(policy, entry.fn))
    loop_thread = get_event_loop_thread()
    if loop_thread is None:
        raise RuntimeError(
            f"actor {entry.actor_name!r} is async but no event loop thread is running: "
            "add dramatiq.middleware.AsyncIO() to the broker"
        )
    return loop_thread.run_coroutine(run_async(steps, AsyncioCalls(policy, entry.fn)))


def run_steps(run: Run, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Steps[Admission | Returned]:
    """Admission, then the body; a success is finished here (its result cached before Results
    stores it). Returns the body's result, or a non-RUN admission for the worker to carry out."""
    policy, task_id = run.policy, run.message_id
    admission: Admission = yield lambda io: io.admit(task_id, args, kwargs, run.requeues)
    if admission.verdict is not Verdict.RUN:
        run.state = State.DONE
        if admission.verdict in (Verdict.RETURN, Verdict.SKIP) and policy.options.claims_at_enqueue:
            # A full pool keeps a queued hold for the requeue; a drop or an on_full value ends
            # the task instead, so the hold goes (a no-op when another message holds the key).
            yield lambda io: io.release(task_id, args, kwargs)
        return (yield from _resolved(admission))

    handle = run.handle = admission.handle
    assert handle is not None
    run.state = State.RUNNING
    try:
        result = yield lambda io: io.call(args, kwargs)
    except CachifyPoolFullError as error:
        # A stacked @pooled / ``with pool(...)`` was full: handled like pool_on_full. When that
        # raises, the handle stays open and is settled like any other failure.
        followup = policy.body_pool_full(run.requeues, args, kwargs, error)
        run.state = State.DONE
        outcome: Outcome = "retry" if followup.verdict is Verdict.REQUEUE else "failure"
        yield lambda io: io.finish(handle, outcome)
        return (yield from _resolved(followup))
    run.state = State.DONE
    try:
        yield lambda io: io.finish(handle, "success", result)
    except Exception:
        # The body succeeded: a failed cache store or release must not make Dramatiq retry it.
        # Whatever was not released ends by its TTL.
        logger.exception("cachify: finishing task %s (message %s) failed", policy.options.task_name, task_id)
    return Returned(result)


def _resolved(admission: Admission) -> Steps[Admission]:
    if admission.verdict is Verdict.RETURN:
        value = admission.value
        admission.value = yield lambda io: io.resolve(value)
    return admission


def settle_steps(run: Run, outcome: Outcome) -> Steps[None]:
    """End a run that did not finish itself: its body failed, or it was never admitted."""
    state, run.state = run.state, State.DONE
    if state is State.RUNNING and run.handle is not None:
        handle = run.handle
        yield lambda io: io.finish(handle, outcome)
    elif state is State.PENDING and outcome != "retry":
        # Never admitted (skipped by another middleware, or admission raised) and not coming
        # back: nothing will run under this message id, so its enqueue-time hold goes.
        yield from release_steps(run.policy, run.message_id, run.message.args, run.message.kwargs)


def release_steps(
    policy: TaskPolicy, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Steps[None]:
    if policy.options.claims_at_enqueue:
        yield lambda io: io.release(task_id, args, kwargs)
