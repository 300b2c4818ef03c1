"""The delivery each asyncio task of a worker is processing, from ``pre_execute`` to its ack.

Taskiq processes each delivery in its own asyncio task: ``pre_execute``, the task function (a
sync one in a thread, with a copy of the task's context), ``on_error`` (where the retry
middlewares re-send), ``post_execute`` and the ack all run in it. A context variable set in
``pre_execute`` therefore reaches every later step of the same delivery and no other one;
that is how the function's wrapper, ``pre_send`` (to recognise a retry) and the ack find the
:class:`Run` they belong to. What a delivery holds and releases is the core's
:class:`~cachify_core.tasks.Delivery`; a :class:`Run` adds what only Taskiq needs.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from taskiq.exceptions import NoResultError
from taskiq.message import TaskiqMessage

from cachify_core.tasks import Admission, CachifyTaskOptionError, Delivery, Verdict

from . import envelope, room
from .requeue import PendingRequeue

if TYPE_CHECKING:
    from .declaration import Declaration
    from .room import Publisher

__all__ = ["Run", "begin", "current", "end", "enter"]

T = TypeVar("T")


@dataclass(eq=False)
class Run:
    """One delivery of a declared task in this worker."""

    message: TaskiqMessage
    declaration: Declaration
    delivery: Delivery
    loop: asyncio.AbstractEventLoop
    #: The message's options could not be read: the task fails with this instead of running.
    error: CachifyTaskOptionError | None = None
    outer: Run | None = None  #: a run this one is nested in (InMemoryBroker ``await_inplace``)
    token: contextvars.Token[Run | None] | None = None
    entered: bool = False  #: the wrapper took this run; a direct call inside the body is not it
    skipped: bool = False  #: ended by cachify's NoResultError (a skip, park or requeue), not the body's
    requeue: PendingRequeue | None = None
    done: bool = False

    @classmethod
    def of(cls, message: TaskiqMessage, declaration: Declaration, publisher: Publisher) -> Run:
        error = None
        try:
            policy = declaration.policy_received(message)
        except CachifyTaskOptionError as exc:
            policy, error = declaration.policies.declared, exc
        requeues = envelope.requeues(message.labels)
        delivery = Delivery(
            policy,
            message.task_id,
            (),
            {},
            requeues,
            reservation=envelope.reservation(message.labels),
            payload=lambda: room.payload(publisher.broker, message, requeues + 1),
            publish=publisher.publish,
            park_id=envelope.park_id(message.task_id, message.labels),
        )
        return cls(message, declaration, delivery, asyncio.get_running_loop(), error)

    @property
    def task_id(self) -> str:
        return self.message.task_id

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Delivery:
        """The wrapper was called with the arguments the body gets: its delivery, to admit."""
        if self.error is not None:
            raise self.error
        self.delivery.args, self.delivery.kwargs = args, kwargs
        return self.delivery

    def without_body(self, decision: Admission) -> Any:
        """The task's result for a verdict other than RUN: a value (a cache hit, a callable
        ``pool_on_full``), or ``NoResultError`` (a skip, a requeue, parked in the waiting room),
        so Taskiq stores nothing and acknowledges. Only a requeue waits for a re-send of its
        own; a parked delivery is published again by whoever hands it its slot."""
        if decision.verdict in (Verdict.CACHED, Verdict.RETURN):
            return decision.value
        if decision.verdict is Verdict.REQUEUE:
            self.requeue = PendingRequeue(self)
        self.skipped = True
        raise NoResultError()

    def on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the worker's event loop from a sync task's thread, and wait for it."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            coro.close()
            raise RuntimeError("cachify: a sync task's wrapper was called on the event loop's thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


_current: contextvars.ContextVar[Run | None] = contextvars.ContextVar("cachify_taskiq_run", default=None)


def current() -> Run | None:
    return _current.get()


def begin(run: Run) -> None:
    """Make ``run`` the current delivery of this asyncio task (``pre_execute``)."""
    outer = _current.get()
    run.outer = outer if outer is not None and not outer.done else None
    run.token = _current.set(run)


def end(run: Run) -> None:
    """``post_execute``: the run is over. It stays current, so the delivery's ack still finds its
    requeue; only a nested run hands the context back to the run around it."""
    run.done = True
    if run.outer is not None and run.token is not None:
        try:
            _current.reset(run.token)
        except ValueError:  # reset from another context: set the outer run explicitly
            _current.set(run.outer)


def enter(task_name: str) -> Run | None:
    """The run the wrapper of ``task_name`` is being called for, or ``None`` for a direct call
    (outside a worker, or the task function called from inside another task's body)."""
    run = _current.get()
    if run is None or run.entered or run.done or run.declaration.name != task_name:
        return None
    run.entered = True
    return run
