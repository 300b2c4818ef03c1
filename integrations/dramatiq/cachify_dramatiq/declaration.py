"""Actor options → the core's :class:`~cachify_core.tasks.TaskPolicies`, one per declared actor
(with or without options: any message may carry overrides)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dramatiq.actor import Actor

from cachify_core import Cachify
from cachify_core.tasks import CachifyTaskOptionError, TaskPolicies, TaskPolicy

from .errors import CachifyMessageOptionError

__all__ = ["DeclaredActor", "declare"]


@dataclass(frozen=True)
class DeclaredActor:
    """One actor as the middleware sees it."""

    policies: TaskPolicies
    is_async: bool  #: an ``async def`` actor: its calls run on dramatiq's event loop thread

    @property
    def name(self) -> str:
        return self.policies.name

    @property
    def fn(self) -> Callable[..., Any]:
        """The user's function (a coroutine function for an async actor)."""
        return self.policies.function

    def policy_for(self, overrides: object) -> TaskPolicy:
        """The policy of one message; bad overrides raise as a ``MiddlewareError``, so they
        reach the caller of ``send_with_options``."""
        try:
            return self.policies.with_overrides(overrides)
        except CachifyTaskOptionError as exc:
            raise CachifyMessageOptionError(str(exc)) from None


def declare(actor: Actor[Any, Any], cachify: Cachify | None) -> DeclaredActor:
    """Validate ``actor``'s options (the error names the actor and the option)."""
    fn, is_async = _user_function(actor)
    options: Mapping[str, Any] = actor.options
    try:
        policies = TaskPolicies(actor.actor_name, fn, options, cachify)
    except CachifyTaskOptionError as exc:
        raise CachifyMessageOptionError(str(exc)) from None
    return DeclaredActor(policies, is_async)


def _user_function(actor: Actor[Any, Any]) -> tuple[Callable[..., Any], bool]:
    """Dramatiq stores an ``async def`` actor as a blocking wrapper (``async_to_sync``, made with
    ``functools.wraps``); the coroutine function under it is what cachify runs on the loop."""
    fn = actor.fn
    inner = getattr(fn, "__wrapped__", None)
    if inner is not None and inspect.iscoroutinefunction(inner) and not inspect.iscoroutinefunction(fn):
        return inner, True
    return fn, False
