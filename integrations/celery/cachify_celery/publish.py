"""The claim at publish: ``app.send_task``, which every non-eager publish goes through.

``delay``, ``apply_async``, signatures, canvas members (group, chain, chord), ``self.retry()``,
beat and ``app.send_task("name", ...)`` all end in ``app.send_task``, so the dedup hold is taken
there, once for all of them (eager calls never reach it: :class:`~.hooks.CachifyTask` claims
those itself). Which policy applies is looked up by task name in the sending app; a task the
sender does not know (``send_task`` of a task registered only on the workers) is published as
it is, and its hold is checked when it runs.

What a claim's answer becomes:

* the hold is taken (or refreshed: a retry or requeue of the holder) → the message is
  published; if publishing raises, the hold is given back;
* a duplicate of a plain send → nothing is published, the holder's ``AsyncResult`` is returned;
* a duplicate of a message other work depends on (a group/chain/chord member, a ``link``) →
  :class:`CachifyDuplicateError` at apply time, so a canvas never waits for a member that was
  not sent.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from kombu import serialization
from kombu.utils.uuid import uuid

from cachify_core.tasks import split_overrides

from .envelope import carried_overrides, requeues_of, reservation_of, with_overrides

__all__ = ["guard_send_task", "policy_for_message", "publish_claimed", "uses_in_process_broker"]

#: Options of ``send_task`` that make other work depend on the message being sent.
_DEPENDENTS = ("chain", "group_id", "chord", "link", "link_error")


def uses_in_process_broker(app: Any) -> bool:
    """Whether the app's broker lives in this process (``memory://``), or it runs eagerly."""
    url = app.conf.broker_url or ""
    return bool(app.conf.task_always_eager) or str(url).startswith("memory")


def policy_for_message(task: Any, headers: Any) -> Any:
    """The policy of ``task`` for a message carrying ``headers`` (``None``: not a cachify task)."""
    policies = getattr(type(task), "_cachify_policies", None)
    return None if policies is None else policies.with_overrides(carried_overrides(headers))


def as_delivered(
    task: Any, args: Any, kwargs: Any, serializer: str | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments as the worker will see them, so both sides format the same key.

    With a JSON serializer a tuple arrives as a list and a datetime as an ISO string; formatting
    the key from what was passed would then name another key than the worker computes. Pickle
    keeps values as they are, so no round trip is made for it.
    """
    args, kwargs = tuple(args or ()), dict(kwargs or {})
    serializer = serializer or task.serializer or task.app.conf.task_serializer
    if serializer == "pickle":
        return args, kwargs
    content_type, encoding, data = serialization.dumps((args, kwargs), serializer)  # type: ignore[no-untyped-call]
    loaded_args, loaded_kwargs = serialization.loads(  # type: ignore[no-untyped-call]
        data, content_type, encoding, accept=[content_type]
    )
    return tuple(loaded_args), dict(loaded_kwargs)


def publish_claimed(
    policy: Any,
    task: Any,
    task_id: str,
    args: Any,
    kwargs: Any,
    options: Mapping[str, Any],
    publish: Callable[[], Any],
    result_cls: Callable[[str], Any],
) -> Any:
    """Claim ``task_id``'s hold, then ``publish()``; the one sequence every publish path runs
    (``send_task`` here, eager calls in :mod:`.hooks`). ``options`` are the send's options: a
    retry or requeue (``retries``, the requeue header) is a resend, a canvas member or a call
    with ``link`` has dependents. A duplicate returns ``result_cls(holder_id)``; a publish that
    raises gives the hold back."""
    resend = (options.get("retries") or 0) > 0 or requeues_of(options.get("headers") or {}) > 0
    dependents = any(options.get(k) for k in _DEPENDENTS)
    delivered = as_delivered(task, args, kwargs, options.get("serializer"))
    handed_over = reservation_of(options.get("headers") or {}) is not None
    claim = policy.claim(task_id, *delivered, resend=resend, dependents=dependents, handed_over=handed_over)
    if claim.duplicate:
        return result_cls(claim.holder_id)
    try:
        return publish()
    except BaseException:
        policy.unclaim(task_id, claim)
        raise


def guard_send_task(app: Any) -> None:
    """Make ``app.send_task`` claim the hold of cachify tasks before publishing (idempotent)."""
    original = app.send_task
    if getattr(original, "_cachify_guarded", False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def send_task(*call_args: Any, **call_kwargs: Any) -> Any:
        bound = signature.bind(*call_args, **call_kwargs)
        named = bound.arguments
        options: dict[str, Any] = dict(named.pop("options", {}))
        name = named["name"]
        task = app.tasks.get(name) if isinstance(name, str) else None
        overrides = split_overrides(options)  # send_task("name", once_ttl=5): same as apply_async
        if overrides:
            with_overrides(options, overrides)
        policy = None if task is None else policy_for_message(task, options.get("headers"))
        if policy is None or not policy.options.active:
            return original(**named, **options)
        policy.require_shared_store("Celery", unless=lambda: uses_in_process_broker(app))
        if not policy.options.claims_at_enqueue:
            return original(**named, **options)
        named["task_id"] = named.get("task_id") or uuid()
        return publish_claimed(
            policy,
            task,
            named["task_id"],
            named.get("args"),
            named.get("kwargs"),
            {**named, **options},
            lambda: original(**named, **options),
            named.get("result_cls") or app.AsyncResult,
        )

    send_task._cachify_guarded = True  # type: ignore[attr-defined]
    app.send_task = send_task
