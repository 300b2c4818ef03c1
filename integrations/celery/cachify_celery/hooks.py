"""``CachifyTask``: Celery's task hooks mapped onto the core delivery lifecycle.

Three overrides of Celery's ``Task``, translation only (what each event means is decided in
:mod:`cachify_core.tasks.delivery`):

* ``bind`` — when a task class joins an app, that app's ``send_task`` starts claiming holds
  (:mod:`.publish`), so every publish path applies ``once_*``.
* ``apply_async`` — per-call option overrides move into the message headers (validated before
  anything is sent); eager calls, which never reach ``send_task``, claim here.
* ``__call__`` — Celery's tracer calls it with the request pushed: one :class:`Delivery`, whose
  verdicts become Celery's actions:

========  ==========================================================================
RUN       the body runs; its return, ``Retry``, ``Reject`` or exception is reported
CACHED    the cached value is returned, so Celery stores it as the SUCCESS result
RETURN    the callable ``pool_on_full``'s value, returned likewise
SKIP      ``Ignore``: acknowledged, not run, nothing stored
PARKED    ``Ignore``: acknowledged; the pool's waiting room publishes it again when a
          slot frees for it (:mod:`.room`), same task id, so nothing is stored now
REQUEUE   re-published with a countdown (:mod:`.requeue`), then ``Ignore``; eager runs
          sleep and are admitted again in place
========  ==========================================================================

Every release of a slot that hands it to a parked task (the run's finish, a cache hit or
duplicate of a handed-over copy) gives that task's message back, and it is published from here
at once (:func:`.room.publish_handovers`); each worker process also sweeps the waiting rooms
(:mod:`.worker_signals`) for hand-overs whose publish was lost and slots freed by expiry.

Slots are leased under a token derived from the delivery (task id, retries, requeues), so the
worker's main process can free the slot of a prefork child that died mid-run in one call
(:mod:`.worker_signals`).

Round trips on top of Celery's: the claim at publish (1), and the delivery's admission and
finish (about 1 per enabled option each).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from kombu.utils.uuid import uuid

from cachify_core.instance import Cachify, get_cachify
from cachify_core.tasks import (
    CachifyTaskOptionError,
    Delivery,
    TaskPolicies,
    Verdict,
    delivery_name,
    split_overrides,
)

from .declaration import class_function, declared_options, task_name
from .envelope import carried_origin, requeues_of, reservation_of, with_overrides
from .publish import guard_send_task, policy_for_message, publish_claimed, uses_in_process_broker
from .requeue import publish_requeue
from .room import ensure_sweeper, parked_payload, publish_handovers

__all__ = ["CachifyTask", "slot_token"]


def slot_token(request: Any) -> str:
    """The slot token of a delivery: a redelivery of the same attempt takes over its dead
    predecessor's slot, and the main process can name a dead child's slot without records. A
    copy deferred while the store could not be heard takes its deferred delivery's token (and
    park name): whatever that delivery's unanswered call took is its own."""
    return delivery_name(
        "celery", request.id, getattr(request, "retries", 0), requeues_of(request), carried_origin(request)
    )


class CachifyTask(Task):  # type: ignore[misc]  # celery ships no type information
    """Base class of tasks that take ``once_*``, ``pool_*`` and ``cache_*`` options.

    Use it as the app's task class (``Celery(..., task_cls=CachifyTask)`` or
    :func:`cachify_celery.install`) or per task (``@app.task(base=CachifyTask, ...)``). Options
    are validated when Celery builds the task class; :class:`CachifyTaskOptionError` names the
    task and the option.

    Calling the task object directly (``check_order(1)``) runs the function in-process without
    options, as Celery does: there is no task id to own a hold.
    """

    #: The instance whose backend and prefix the task's holds, slots and cache entries use;
    #: ``None``: the global one from ``init_cachify`` (looked up at each call, so it may be set
    #: after the tasks are declared). Settable per task: ``@app.task(cachify=instance)``.
    cachify: Cachify | None = None

    #: The task's declared policy and its per-call variants; ``None`` on abstract classes.
    _cachify_policies: ClassVar[TaskPolicies | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = task_name(cls)
        if cls.cachify is not None and not isinstance(cls.cachify, Cachify):
            raise CachifyTaskOptionError(
                f"task {name!r}: cachify must be a Cachify instance or None, got {cls.cachify!r}"
            )
        function = class_function(cls)
        # Options on an abstract class are checked on each concrete task built from it.
        cls._cachify_policies = (
            None
            if function is None
            else TaskPolicies(name, function, declared_options(cls, CachifyTask), lambda: _instance(cls))
        )

    @classmethod
    def bind(cls, app: Any) -> Any:
        bound = super().bind(app)
        guard_send_task(app)
        return bound

    # -- sending -------------------------------------------------------------------------------
    def apply_async(
        self,
        args: Any = None,
        kwargs: Any = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> Any:
        """Send the task; with a ``once_key`` (modes queued/until_started) the hold is taken first.

        A duplicate is not sent: the holder's ``AsyncResult`` is returned (or
        ``CachifyDuplicateError`` raised, with ``once_raise=True``, and for a group, chain or
        chord member, whose caller would otherwise wait for a message that never comes). A
        publish that fails gives the hold back. Per-call options (``apply_async(...,
        once_raise=True)``) override the declared ones for this message and travel in its
        headers; ``once_key=None`` turns deduplication off for it.

        Round trips: 1 to take the hold (2 on a conflict: the holder's id is read back).
        """
        policies = type(self)._cachify_policies
        overrides = split_overrides(options)
        if policies is None:
            if overrides:
                raise CachifyTaskOptionError(
                    f"task {self.name!r}: abstract task; cannot take {sorted(overrides)}"
                )
            return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow, **options)
        if overrides:
            policies.with_overrides(with_overrides(options, overrides))  # validated before sending
        if not self.app.conf.task_always_eager:
            return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow, **options)
        # Eager: Celery runs the task right here and never calls send_task.
        policy = policy_for_message(self, options.get("headers"))
        if not policy.options.claims_at_enqueue:
            return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow, **options)
        task_id = task_id or uuid()
        return publish_claimed(
            policy,
            self,
            task_id,
            args,
            kwargs,
            {**options, "link": link, "link_error": link_error},
            lambda: super(CachifyTask, self).apply_async(
                args, kwargs, task_id, producer, link, link_error, shadow, **options
            ),
            self.AsyncResult,
        )

    # -- running -------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly or type(self)._cachify_policies is None:
            return super().__call__(*args, **kwargs)
        policy = policy_for_message(self, request.headers)
        if not request.is_eager:
            policy.require_shared_store("Celery", unless=lambda: uses_in_process_broker(self.app))
        requeues = requeues_of(request)
        app = self.app
        parks = not request.is_eager  # nothing comes back through a broker: a full pool waits here
        if parks and policy.options.uses_waiting_rooms:
            ensure_sweeper(app, policy.cachify)
        while True:
            delivery = Delivery(
                policy,
                request.id,
                args,
                kwargs,
                requeues,
                slot_token(request),
                reservation=reservation_of(request),
                payload=self._parked_payload(request, args, kwargs, requeues) if parks else None,
                publish=(lambda handed: publish_handovers(app, handed)) if parks else None,
            )
            done, value = self._deliver(delivery, args, kwargs)
            if done:
                return value
            if not request.is_eager:
                publish_requeue(self, request, delivery)
                raise Ignore()
            # No broker to come back through: wait here, same id, same request.
            time.sleep(0.0 if delivery.decision is None else delivery.decision.delay_s)
            delivery.requeue_published()
            requeues += 1

    def _parked_payload(
        self, request: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], requeues: int
    ) -> Callable[[], bytes]:
        return lambda: parked_payload(self, request, args, kwargs, requeues)

    def _deliver(
        self, delivery: Delivery, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[bool, Any]:
        """Admit and run one delivery: ``(True, value)`` to return, ``(False, None)`` to requeue."""
        decision = delivery.admit()
        if decision.verdict is Verdict.RUN:
            try:
                result = self.run(*args, **kwargs)
            except Retry as exc:
                delivery.raised(exc, retry=True)
                raise
            except Reject as exc:  # requeue=True: the broker redelivers the same task id
                delivery.raised(exc, retry=bool(exc.requeue))
                raise
            except BaseException as exc:
                after = delivery.raised(exc, retry=False)
                if after is None:
                    raise
                decision = after
            else:
                delivery.succeeded(result)
                return True, result
        if decision.verdict in (Verdict.CACHED, Verdict.RETURN):
            return True, decision.value
        if decision.verdict in (Verdict.SKIP, Verdict.PARKED):
            raise Ignore()
        return False, None


def _instance(cls: type[CachifyTask]) -> Cachify:
    return cls.cachify if cls.cachify is not None else get_cachify()
