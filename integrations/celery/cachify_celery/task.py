"""``CachifyTask``: the Celery base task class that applies the task options.

Two overrides, nothing else: ``apply_async`` (which ``delay``, signatures, retries and eager
mode all go through) takes the dedup hold before the message is published, and ``__call__``
(which Celery's tracer calls with the request pushed) admits, runs and finishes the delivery.
The policy itself is :class:`cachify_core.tasks.TaskPolicy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from celery import Task
from kombu import serialization
from kombu.utils.uuid import uuid

from cachify_core.instance import Cachify, get_cachify
from cachify_core.tasks import CachifyTaskOptionError, TaskPolicy, is_task_option

from .declaration import TaskPolicies, class_function, declared_options, task_name
from .execution import execute
from .headers import OPTIONS_HEADER, header
from .requeue import REPUBLISH_OPTION

__all__ = ["CachifyTask"]


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
        """Send the task; with a ``once_key`` (modes queued/until_started) take the hold first.

        A duplicate is not sent: the holder's ``AsyncResult`` is returned (or
        ``CachifyDuplicateError`` raised, with ``once_raise=True``). A publish that fails
        gives the hold back. Per-call options (``apply_async(..., once_raise=True)``) override
        the declared ones for this message and travel in its headers.

        Round trips: 1 to take the hold (2 on a conflict: the holder's id is read back).
        """
        republish = bool(options.pop(REPUBLISH_OPTION, False))
        policy = self._policy_for_send(options)
        if republish or policy is None or not policy.options.claims_at_enqueue:
            return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow, **options)
        task_id = task_id or uuid()
        claim = policy.claim(task_id, *self._as_delivered(args, kwargs, options))
        if claim.duplicate:
            return self.AsyncResult(claim.holder_id)
        try:
            return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow, **options)
        except BaseException:
            policy.unclaim(task_id, claim)
            raise

    def _policy_for_send(self, options: dict[str, Any]) -> TaskPolicy | None:
        """The policy for this message; moves per-call option overrides into its headers."""
        policies = type(self)._cachify_policies
        overrides = {name: options.pop(name) for name in [n for n in options if is_task_option(n)]}
        if policies is None:
            if overrides:
                raise CachifyTaskOptionError(
                    f"task {self.name!r}: abstract task; cannot take {sorted(overrides)}"
                )
            return None
        headers = options.get("headers") or {}
        carried = headers.get(OPTIONS_HEADER)  # a retry re-sends the original call's overrides
        if overrides:
            overrides = {**carried, **overrides} if isinstance(carried, Mapping) else overrides
            policy = policies.with_overrides(overrides)  # validated before anything is sent
            options["headers"] = {**headers, OPTIONS_HEADER: overrides}
            return policy
        return policies.with_overrides(carried)

    def _as_delivered(
        self, args: Any, kwargs: Any, options: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments as the worker will see them, so both sides format the same key.

        With a JSON serializer a tuple arrives as a list and a datetime as an ISO string;
        formatting the key from what was passed would then name a different key than the worker
        computes. Pickle keeps values as they are, so no round trip is made for it.
        """
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        serializer = options.get("serializer") or self.serializer or self.app.conf.task_serializer
        if serializer == "pickle":
            return args, kwargs
        content_type, encoding, data = serialization.dumps((args, kwargs), serializer)  # type: ignore[no-untyped-call]
        loaded_args, loaded_kwargs = serialization.loads(  # type: ignore[no-untyped-call]
            data, content_type, encoding, accept=[content_type]
        )
        return tuple(loaded_args), dict(loaded_kwargs)

    # -- running -------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        policies = type(self)._cachify_policies
        if request.called_directly or policies is None:
            return super().__call__(*args, **kwargs)
        policy = policies.with_overrides(header(request, OPTIONS_HEADER))
        return execute(self, policy, request, args, kwargs)


def _instance(cls: type[CachifyTask]) -> Cachify:
    return cls.cachify if cls.cachify is not None else get_cachify()
