"""One delivery of a task being processed by this worker, from ``pre_execute`` to its ack.

Taskiq processes each delivery in its own asyncio task: ``pre_execute``, the task function (a
sync one in a thread, with a copy of the task's context), ``on_error`` (where the retry
middlewares re-send), ``post_execute`` and the ack all run in it. A context variable set in
``pre_execute`` therefore reaches every later step of the same delivery and no other one;
that is how the function wrapper, ``pre_send`` (to recognise a retry) and the ack find the
run they belong to.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from taskiq.exceptions import NoResultError
from taskiq.message import TaskiqMessage

from cachify_core.errors import CachifyPoolFullError
from cachify_core.tasks import Admission, Outcome, RunHandle, Verdict

from .broker_hooks import Ack
from .labels import requeue_count

if TYPE_CHECKING:
    from .declaration import Declaration

__all__ = ["PendingRequeue", "Run", "begin", "current", "end", "enter"]

logger = logging.getLogger("cachify.taskiq")

T = TypeVar("T")


@dataclass(eq=False)
class PendingRequeue:
    """A requeue decided for one delivery: send it again after ``delay_s``, and acknowledge the
    delivery only once that is done (see :mod:`.requeue`)."""

    run: Run
    delay_s: float
    ack: Ack | None = None  #: the delivery's own ack, held back until the re-send is published
    published: bool = False

    def hold_ack(self, ack: Ack) -> bool:
        """Keep ``ack`` for later; False if the re-send is already out (ack now)."""
        if self.published:
            return False
        self.ack = ack
        return True


@dataclass(eq=False)
class Run:
    """The state of one delivery; the task function's wrapper fills it, ``post_execute`` ends it."""

    message: TaskiqMessage
    declaration: Declaration
    loop: asyncio.AbstractEventLoop
    outer: Run | None = None  #: a run this one is nested in (InMemoryBroker ``await_inplace``)
    token: contextvars.Token[Run | None] | None = None
    entered: bool = False  #: the wrapper took this run; a direct call inside the body is not it
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    handle: RunHandle | None = None  #: what an admitted run holds, for finish()
    outcome: Outcome | None = None  #: set when the result alone does not tell (on_full paths)
    release_hold: bool = False  #: ended without running: nothing runs under this id any more
    retried: bool = False  #: a retry middleware re-sent this task id during on_error
    requeue: PendingRequeue | None = None
    skipped: bool = False  #: ended by cachify's NoResultError (a skip or a requeue), not the body's
    done: bool = False

    @property
    def task_id(self) -> str:
        return self.message.task_id

    @property
    def requeues(self) -> int:
        return requeue_count(self.message.labels)

    # -- the verdicts, as the wrapper applies them (no I/O here beyond the policy's) ------------
    async def admit(self) -> Admission:
        """Cache check → dedup → pool slot, on the event loop (the wrapper set ``args``/``kwargs``)."""
        try:
            admission = await self.declaration.policy.aadmit(
                self.task_id, self.args, self.kwargs, self.requeues
            )
        except BaseException:
            # on_full="raise", requeues exhausted, a backend error: the task fails without running.
            self.release_hold = True
            raise
        self.handle = admission.handle
        return admission

    def without_body(self, admission: Admission) -> Any:
        """The task's result for a verdict other than RUN; raises ``NoResultError`` for a skip or a
        requeue, so Taskiq stores nothing and acknowledges."""
        verdict = admission.verdict
        if verdict is Verdict.CACHED:
            return admission.value
        if verdict is Verdict.REQUEUE:
            self.requeue = PendingRequeue(self, admission.delay_s)
            raise self._no_result()
        # RETURN (callable on_full) and SKIP (duplicate, on_full="drop"): nothing will run under
        # this id. The policy keeps a queued hold whenever the pool was full, so give it back.
        self.release_hold = True
        if verdict is Verdict.RETURN:
            return admission.value
        raise self._no_result()

    def body_pool_full(self, error: CachifyPoolFullError) -> Any:
        """A ``CachifyPoolFullError`` escaped the body: handled like ``pool_on_full``."""
        admission = self.declaration.policy.body_pool_full(self.requeues, self.args, self.kwargs, error)
        if admission.verdict is Verdict.REQUEUE:
            self.outcome = "retry"  # the same task id runs again: a queued hold is kept
            self.requeue = PendingRequeue(self, admission.delay_s)
            raise self._no_result()
        self.outcome = "failure"  # released, and an on_full value is not the task's to cache
        if admission.verdict is Verdict.RETURN:
            return admission.value
        raise self._no_result()

    def _no_result(self) -> NoResultError:
        self.skipped = True
        return NoResultError()

    def finish_outcome(self, is_err: bool) -> Outcome:
        if self.retried:
            return "retry"
        if self.outcome is not None:
            return self.outcome
        return "failure" if is_err else "success"

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
