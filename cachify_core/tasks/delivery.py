"""One delivery of a task, from the worker receiving it to its end — the lifecycle every
integration maps its framework's hooks onto, decided here once.

A :class:`Delivery` is made when a worker starts processing a message. The integration reports
events as its framework produces them; the delivery decides, for each, what is stored,
released, kept or published again, and answers with a :class:`~.policy.Verdict` for the
integration to carry out (run the body, return a value, acknowledge without running, requeue):

==========  ===========================  ==========  ==============================================
state       event                        next        what happens in the store
==========  ===========================  ==========  ==============================================
RECEIVED    ``admit`` → RUN              RUNNING     cache miss, hold taken/checked, slot leased
RECEIVED    ``admit`` → CACHED/RETURN    ENDED       the send-time claim is given back
RECEIVED    ``admit`` → SKIP             ENDED       duplicate: nothing of its own; drop: claim back
RECEIVED    ``admit`` → PARKED           ENDED       pool full (or a rate limit's wait): parked in
                                                     a waiting room (same round trip); a queued
                                                     hold stays, without expiry; a running one goes
RECEIVED    ``admit`` → REQUEUE          REQUEUING   a queued hold is kept for the requeued copy
RECEIVED    ``admit``: store unreachable REQUEUING   ``on_store_error="defer"`` (default): back through
                                                     the broker, nothing touched ("run": RUNNING
                                                     ungated; "fail": raises, as below)
RECEIVED    ``admit`` raises             ENDED       the task fails unrun: its claim is given back,
                                                     a handed-over copy's reserved slot passed on
RUNNING     ``succeeded(result)``        ENDED       result cached; slot and hold released
RUNNING     ``raised(e, retry=True)``    ENDED       slot released; the hold kept for the retry
RUNNING     ``raised(e, retry=False)``   ENDED       slot and hold released
RUNNING     ``raised(e, retry=None)``    RAISED      nothing yet: the framework decides
RUNNING     ``raised(CachifyPoolFull)``  REQUEUING   handled like ``pool_on_full`` (or ENDED)
RAISED      ``retrying``                 ENDED       slot released; the hold kept for the retry
RAISED      ``ended``                    ENDED       slot and hold released (a failure)
RECEIVED    ``ended`` / ``abandoned``    ENDED       never admitted (revoked, skipped by another
                                                     middleware): its claim is given back, and a
                                                     handed-over copy's reserved slot passed on
REQUEUING   ``requeue_published``        ENDED       logged; the copy carries the hold on
REQUEUING   ``requeue_failed``           ENDED       the claim is given back: nothing will run
ENDED       anything                     ENDED       nothing (every event is idempotent there)
==========  ===========================  ==========  ==============================================

A full pool parks the delivery in its waiting room (``pool_on_full="requeue"``, the default,
when the integration gives a ``payload`` and the store has waiting rooms): the message is
acknowledged and nothing of it stays in the worker. Every release of a slot hands it to the
oldest parked delivery in the same round trip, and returns that delivery's payload: the
delivery passes every such hand-over, of any event, to the integration's ``publish``, which
sends it through the broker at once carrying its ``reservation``. A hand-over that is not
published (a crash, a broker error) is published again by the waiting room's sweep
(:mod:`cachify_core.rooms`). Where nothing can park (custom-client stores, eager runs,
``pool_max_waiting`` reached) a full pool backs off through the broker (REQUEUE).

"The body raised" covers everything a framework reports as an exception: a retry (Celery
``Retry``, a retry middleware re-sending the same id), a reject, a revoke, a plain failure.
Only the integration knows which; when it cannot tell yet (Dramatiq and Taskiq learn about a
retry when it is re-sent), it says ``retry=None`` and reports ``retrying``/``ended`` later.

After the body ran, a store that cannot be reached never changes the run's outcome: the
failure is logged, and the releases of its once hold and (when its token was made for the run
alone) its pool slot are owed and sent again by this process's next admission or waiting-room
sweep tick that reaches the store (:mod:`.owed`); what is not kept there (a rate claim, a slot
named after its delivery, an owed release of a process that died) ends by its TTL (renewal
has stopped).

Every event exists as a blocking method and an ``a``-prefixed asyncio twin; both drive the same
generator of backend steps (:mod:`cachify_core.steps`).
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from ..backends.base import Handover
from ..errors import CachifyBackendError, CachifyPoolFullError
from ..metrics import events
from ..steps import Primitives, Steps, run_async, run_blocking
from . import logs, owed
from .envelope import ORIGIN_FIELD, REQUEUES_FIELD, origin_value
from .policy import Admission, Outcome, RunHandle, TaskPolicy, Verdict

__all__ = ["Delivery", "Publish", "State", "is_retry_of"]

logger = logs.logger

#: Publishes hand-overs through the broker: each payload once, carrying its entry id as the
#: reservation. Blocking for :meth:`Delivery.admit` and friends; for the ``a``-twins it may
#: return an awaitable, which is awaited.
Publish = Callable[[Sequence[Handover]], Any]


class State(enum.Enum):
    RECEIVED = "received"  #: not admitted yet: holds at most the claim taken at send
    RUNNING = "running"  #: admitted: the handle holds a hold and/or a slot, renewed
    RAISED = "raised"  #: the body raised; the framework has not said retry or failure yet
    REQUEUING = "requeuing"  #: the pool was full: the integration is publishing the task again
    ENDED = "ended"  #: nothing left to release


class Delivery:
    """One delivery of one task id: its policy, arguments and where it is in its life."""

    __slots__ = (
        "_handed",
        "_unheard",
        "args",
        "decision",
        "handle",
        "kwargs",
        "park_id",
        "payload",
        "policy",
        "publish",
        "requeues",
        "reservation",
        "slot_token",
        "state",
        "task_id",
    )

    def __init__(
        self,
        policy: TaskPolicy,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        requeues: int = 0,
        slot_token: str | None = None,
        *,
        reservation: str | None = None,
        payload: Callable[[], bytes] | None = None,
        publish: Publish | None = None,
        park_id: str | None = None,
    ) -> None:
        self.policy = policy
        self.task_id = task_id
        self.args = args
        self.kwargs = kwargs
        #: How many times a full pool sent this task id back before (from the envelope).
        self.requeues = requeues
        #: The token a pool slot is leased under; ``None``: a fresh one. Celery's prefork
        #: children derive it from the delivery so the main process can free a dead child's slot.
        self.slot_token = slot_token
        #: This delivery's name in a waiting room, the same for every delivery of the same
        #: message (task id, retry and requeue count: Dramatiq's and Taskiq's integrations), so
        #: a redelivery after a crash between its park and its acknowledgement is recognised
        #: (acknowledged, not parked twice). ``None``: derived from ``slot_token``, else fresh.
        #: A copy deferred because the store could not be heard parks under its deferred
        #: delivery's name (:func:`.envelope.read_origin`; :meth:`copy_fields` writes it).
        self.park_id = park_id
        #: The waiting-room entry this copy was handed a slot for (from the envelope), if any.
        self.reservation = reservation
        #: The message that publishes this delivery again (same id and route, retries untouched,
        #: ``requeues + 1``), made only when it parks; ``None``: it cannot park.
        self.payload = payload if publish is not None else None
        #: Publishes the hand-overs this delivery's releases make.
        self.publish = publish
        self._handed: list[Handover] = []
        #: Its admission failed to hear back from the store: the call may have been carried out.
        self._unheard = False
        self.state = State.RECEIVED
        self.handle: RunHandle | None = None
        #: The last verdict (REQUEUE carries its ``delay_s``), for the integration to carry out.
        self.decision: Admission | None = None

    @property
    def task_name(self) -> str:
        return self.policy.options.task_name

    @property
    def active(self) -> bool:
        """Whether any option is on (without one, every event is a no-op and admission runs)."""
        return self.policy.options.active

    def __repr__(self) -> str:
        return f"<Delivery {self.task_name}[{self.task_id}] {self.state.value}>"

    # -- the steps of each event (no I/O of their own) ------------------------------------------
    def _admit_steps(self, asyncio: bool) -> Steps[Admission]:
        if self.state is not State.RECEIVED:
            raise RuntimeError(f"{self!r}: admitted twice")
        p = self.policy
        try:
            try:
                # Holds and slots an earlier finish here could not give back (the store was
                # down): given back first, so this admission may take such a key or slot afresh
                # (1 round trip, only when something is owed); their hand-overs are published
                # with this admission's.
                self._handed.extend((yield from owed.settle_steps(p.cachify)))
                decision = yield from p.admit_steps(
                    p.cachify,
                    self.task_id,
                    self.args,
                    self.kwargs,
                    self.requeues,
                    asyncio,
                    self.slot_token,
                    self.reservation,
                    self.payload,
                    self._handed,
                    self.park_id,
                )
            except CachifyBackendError as exc:
                self._unheard = True
                return self._decided(p.store_error(self.task_id, self.requeues, exc))
            logs.store_reachable()
            if self._ended_meanwhile() and decision.handle is not None:
                # The framework ended the delivery while its admission was in flight (Taskiq's
                # timeout, say): what the admission won must not be renewed forever.
                yield from self._quietly(
                    p.finish_steps(decision.handle, "failure", None), "releasing a late admission"
                )
                return Admission(Verdict.SKIP, reason="ended while it was being admitted")
        except BaseException:
            # on_full="raise", requeues exhausted, an unreachable store: the task fails unrun,
            # so its send-time claim must not block the key for once_ttl.
            self.state = State.ENDED
            yield from self._quietly(
                self._release_claim_steps(), "giving back its claim after a failed admission"
            )
            raise
        return self._decided(decision)

    def _ended_meanwhile(self) -> bool:
        """Whether an ``ended`` event came in while this delivery's steps were in flight."""
        return self.state is State.ENDED

    def _decided(self, decision: Admission) -> Admission:
        self.decision = decision
        self._handed.extend(decision.handed)
        verdict = decision.verdict
        if events.sink is not None:
            events.sink.verdict(self.task_name, verdict.value)
        if verdict is Verdict.RUN:  # every other verdict has a line of its own
            logs.admitted(self.task_name, self.task_id, self.reservation, self.requeues)
            self.handle = decision.handle
            self.state = State.RUNNING
        elif verdict is Verdict.REQUEUE:
            self.state = State.REQUEUING
        else:  # CACHED, RETURN, SKIP, PARKED: the policy released or kept what it took
            self.state = State.ENDED
        return decision

    def _finish_steps(self, outcome: Outcome, result: Any = None) -> Steps[None]:
        handle, self.handle = self.handle, None
        self.state = State.ENDED
        if handle is not None:
            try:
                yield from self._quietly(
                    self.policy.finish_steps(handle, outcome, result), f"finishing its run ({outcome})"
                )
            finally:
                self._handed.extend(handle.handed)
                handle.handed.clear()

    def _raised_steps(self, error: BaseException, retry: bool | None) -> Steps[Admission | None]:
        if self.state is not State.RUNNING:
            return None
        if isinstance(error, CachifyPoolFullError):
            # A stacked @pooled / ``with pool(...)`` found its pool full: like pool_on_full.
            try:
                after = self.policy.body_pool_full(self.task_id, self.requeues, self.args, self.kwargs, error)
            except BaseException:
                yield from self._finish_steps("failure")
                raise
            requeue = after.verdict is Verdict.REQUEUE
            yield from self._finish_steps("retry" if requeue else "failure")
            return self._decided(after)
        if retry is None:
            self.state = State.RAISED
            return None
        yield from self._finish_steps("retry" if retry else "failure")
        return None

    def _retrying_steps(self) -> Steps[None]:
        if self.state in (State.RUNNING, State.RAISED):
            yield from self._finish_steps("retry")

    def _ended_steps(self) -> Steps[None]:
        state = self.state
        if state in (State.RUNNING, State.RAISED):
            yield from self._finish_steps("failure")
        elif state is State.RECEIVED:
            self.state = State.ENDED
            yield from self._quietly(
                self._release_claim_steps(), "giving back the claim of an abandoned delivery"
            )
            if self.reservation is not None:  # a handed-over copy that will not run: pass its slot on
                yield from self._quietly(self._cancel_steps(), "giving up its reserved slot")

    def _cancel_steps(self) -> Steps[None]:
        p = self.policy
        handed = yield from p.cancel_steps(p.cachify, self.reservation, self.args, self.kwargs)
        self._handed.extend(handed)

    def _requeue_failed_steps(self) -> Steps[None]:
        if self.state is State.REQUEUING:
            self.state = State.ENDED
            logger.error("cachify: task %s[%s] could not be requeued", self.task_name, self.task_id)
            yield from self._quietly(
                self._release_claim_steps(), "giving back its claim after a failed requeue"
            )

    def _release_claim_steps(self) -> Steps[None]:
        p = self.policy
        if p.options.claims_at_enqueue:
            yield from p.unclaim_steps(self.task_id, p.once_key(self.args, self.kwargs))

    def _quietly(self, steps: Steps[None], doing: str) -> Steps[None]:
        """Bookkeeping that must not replace the run's own outcome: logged, then left to TTLs."""
        try:
            yield from steps
        except Exception as exc:
            logger.error("cachify: task %s[%s]: %s failed: %s", self.task_name, self.task_id, doing, exc)

    def copy_fields(self) -> dict[str, object]:
        """The cachify fields (:mod:`.envelope`) the integration writes into this delivery's
        requeued copy, over the ones the message carries: the requeue count + 1 and, for a
        deferral after the store could not be heard, the name this delivery asked under
        (``cachify_origin``, which the integration passes back as the copy's ``park_id``)."""
        fields: dict[str, object] = {REQUEUES_FIELD: self.requeues + 1}
        name = self.park_id or self.slot_token
        if self._unheard and name is not None:
            fields[ORIGIN_FIELD] = origin_value(self.requeues + 1, name)
        return fields

    def requeue_published(self) -> None:
        """The integration published the requeued copy (same task id, ``requeues + 1``): the
        copy carries the hold on. No I/O."""
        if self.state is State.REQUEUING:
            self.state = State.ENDED
            decision = self.decision
            delay_s = 0.0 if decision is None else decision.delay_s
            reason = "" if decision is None else decision.reason
            if events.sink is not None:
                events.sink.count("requeued", "pool", self.policy.label("pool_key"), self.task_name)
            logs.requeued(self.task_name, self.task_id, self.requeues + 1, delay_s, reason)

    # -- blocking ------------------------------------------------------------------------------
    def _run(self, steps: Steps[Any]) -> Any:
        # Without options no step touches the store, and the global instance may not exist.
        backend = self.policy.cachify.sync_backend if self.active else _NO_STORE
        try:
            return run_blocking(steps, backend)
        finally:
            handed = self._take_handed()
            if handed:
                self._publish(handed)

    def _take_handed(self) -> list[Handover]:
        handed, self._handed = self._handed, []
        if handed and self.publish is None:
            # Nobody here can publish (an integration without a publisher): the waiting room's
            # sweep publishes them after their lease.
            logger.warning(
                "cachify: task %s[%s]: %d hand-over(s) left to the waiting room's sweep (no publisher)",
                self.task_name,
                self.task_id,
                len(handed),
            )
            return []
        return handed

    def _publish(self, handed: list[Handover]) -> None:
        assert self.publish is not None
        try:
            result = self.publish(handed)
            if inspect.isawaitable(result):
                raise TypeError(f"{self!r}: an async publish was given to a blocking delivery")
            if events.sink is not None:
                events.sink.count(
                    "handed_over", "pool", self.policy.label("pool_key"), self.task_name, len(handed)
                )
        except Exception as exc:  # the sweep publishes them again after their lease
            logs.handover_failed(self.task_name, len(handed), exc)

    def admit(self) -> Admission:
        """Cache check → dedup → pool slot; the verdict to carry out."""
        if not self.active:
            return self._ungated()
        decision: Admission = self._run(self._admit_steps(False))
        return decision

    def _ungated(self) -> Admission:
        if self.state is not State.RECEIVED:
            raise RuntimeError(f"{self!r}: admitted twice")
        self.state = State.RUNNING
        self.decision = _RUN
        return _RUN

    def succeeded(self, result: Any) -> None:
        """The body returned ``result``: cache it, release the slot and the hold."""
        if self.state is State.RUNNING:
            self._run(self._finish_steps("success", result))

    def raised(self, error: BaseException, retry: bool | None = None) -> Admission | None:
        """The body raised ``error``. ``retry``: whether the framework runs the same task id
        again (``None``: not known yet). Returns a verdict to carry out instead of re-raising
        (a full pool inside the body), or ``None``: let the error propagate."""
        after: Admission | None = self._run(self._raised_steps(error, retry))
        return after

    def retrying(self) -> None:
        """The framework re-sent this task id as a retry (after the body raised)."""
        self._run(self._retrying_steps())

    def ended(self) -> None:
        """The framework is done with this delivery (acked, nacked, post-execute)."""
        self._run(self._ended_steps())

    abandoned = ended  #: never admitted and will not be: revoked, skipped by another middleware

    def requeue_failed(self) -> None:
        """Publishing the requeued copy failed: nothing will run under this id, the claim goes."""
        self._run(self._requeue_failed_steps())

    # -- asyncio -------------------------------------------------------------------------------
    async def _arun(self, steps: Steps[Any]) -> Any:
        backend = self.policy.cachify.async_backend if self.active else _NO_STORE
        try:
            return await run_async(steps, backend)
        finally:
            handed = self._take_handed()
            if handed:
                await self._apublish(handed)

    async def _apublish(self, handed: list[Handover]) -> None:
        assert self.publish is not None
        try:
            result = self.publish(handed)
            if inspect.isawaitable(result):
                await result
            if events.sink is not None:
                events.sink.count(
                    "handed_over", "pool", self.policy.label("pool_key"), self.task_name, len(handed)
                )
        except Exception as exc:  # the sweep publishes them again after their lease
            logs.handover_failed(self.task_name, len(handed), exc)

    async def aadmit(self) -> Admission:
        if not self.active:
            return self._ungated()
        decision: Admission = await self._arun(self._admit_steps(True))
        if inspect.isawaitable(decision.value):  # an async pool_on_full callable
            decision.value = await decision.value
        return decision

    async def asucceeded(self, result: Any) -> None:
        if self.state is State.RUNNING:
            await self._arun(self._finish_steps("success", result))

    async def araised(self, error: BaseException, retry: bool | None = None) -> Admission | None:
        after: Admission | None = await self._arun(self._raised_steps(error, retry))
        if after is not None and inspect.isawaitable(after.value):
            after.value = await after.value
        return after

    async def aretrying(self) -> None:
        await self._arun(self._retrying_steps())

    async def aended(self) -> None:
        await self._arun(self._ended_steps())

    aabandoned = aended

    async def arequeue_failed(self) -> None:
        await self._arun(self._requeue_failed_steps())


def is_retry_of(delivery: Delivery | None, task_id: str) -> bool:
    """Whether a message sent with ``task_id`` while ``delivery`` is processed is its framework
    retry (Dramatiq's Retries and Taskiq's retry middlewares re-send from the same context)."""
    return (
        delivery is not None
        and delivery.task_id == task_id
        and delivery.state in (State.RUNNING, State.RAISED)
    )


_RUN = Admission(Verdict.RUN)  #: the verdict of every delivery without options (nothing to hold)
_NO_STORE = cast(Primitives, None)  #: what steps of a delivery without options run against (none run)
