"""Which task policy applies to a message: its actor's declared options, overridden by the
cachify options the message carries (``send_with_options(once_key=..., ...)``).

Options are validated when the actor is declared (and per-message ones when the message is
sent), by the core's ``parse_task_options``; errors name the actor and the option.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dramatiq.actor import Actor

from cachify_core import Cachify
from cachify_core.tasks import CachifyTaskOptionError, TaskPolicy, is_task_option, parse_task_options

from .errors import CachifyMessageOptionError

__all__ = [
    "CLAIMED_OPTION",
    "REQUEUES_OPTION",
    "ActorEntry",
    "ActorPolicies",
    "is_first_enqueue",
]

#: Message option: how many times a full pool sent this message back (the retry budget,
#: ``options["retries"]``, is left alone).
REQUEUES_OPTION = "cachify_requeues"
#: Message option: the message took its dedup hold when it was first sent, so a later enqueue
#: of the same message (a retry, a requeue, a delayed message falling due) is the holder.
CLAIMED_OPTION = "cachify_claimed"

#: Distinct per-message override sets whose parsed policies are kept; a producer that builds
#: keys into the options (instead of the template) would otherwise grow the cache forever.
_MAX_OVERRIDE_POLICIES = 1024

_GROUPS = ("once_", "pool_", "cache_")


def is_first_enqueue(options: Mapping[str, Any]) -> bool:
    """Whether this enqueue sends a new message, rather than re-enqueueing one that was sent."""
    return not (options.get(CLAIMED_OPTION) or options.get(REQUEUES_OPTION) or options.get("retries"))


def user_function(actor: Actor[Any, Any]) -> tuple[Callable[..., Any], bool]:
    """The function the user decorated, and whether it is a coroutine function.

    Dramatiq stores an ``async def`` actor as a blocking wrapper (``async_to_sync``, made with
    ``functools.wraps``); the coroutine function under it is what runs on the event loop.
    """
    fn = actor.fn
    inner = getattr(fn, "__wrapped__", None)
    if inner is not None and inspect.iscoroutinefunction(inner) and not inspect.iscoroutinefunction(fn):
        return inner, True
    return fn, False


@dataclass(frozen=True)
class ActorEntry:
    """One declared actor as the middleware sees it."""

    actor_name: str
    fn: Callable[..., Any]  #: the user's function (a coroutine function for async actors)
    is_async: bool
    declared: Mapping[str, Any]  #: the actor's cachify options, as declared
    policy: TaskPolicy | None  #: for messages without overrides; None: cachify is off


class ActorPolicies:
    """Entries of the actors declared on one broker, and the policies of overridden messages."""

    def __init__(self, cachify: Cachify | None) -> None:
        self._cachify = cachify
        self._entries: dict[str, ActorEntry] = {}
        self._overridden: dict[tuple[str, str], TaskPolicy | None] = {}
        self._lock = threading.Lock()

    def declare(self, actor: Actor[Any, Any]) -> ActorEntry:
        fn, is_async = user_function(actor)
        declared = {k: v for k, v in actor.options.items() if is_task_option(k)}
        entry = ActorEntry(
            actor.actor_name, fn, is_async, declared, self._parse(actor.actor_name, fn, declared)
        )
        self._entries[actor.actor_name] = entry
        return entry

    def entry(self, actor_name: str) -> ActorEntry | None:
        return self._entries.get(actor_name)

    def policy_for(self, entry: ActorEntry, options: Mapping[str, Any]) -> TaskPolicy | None:
        """The policy of a message with ``options``; ``None`` when cachify is off for it."""
        overrides = {k: v for k, v in options.items() if is_task_option(k)}
        if not overrides:
            return entry.policy
        # Message options travel as JSON, so they are str/number/list/None: repr is a stable key.
        cache_key = (entry.actor_name, repr(sorted(overrides.items())))
        try:
            return self._overridden[cache_key]
        except KeyError:
            pass
        on_full = overrides.get("pool_on_full")
        if on_full is not None and not isinstance(on_full, str):
            raise CachifyMessageOptionError(
                f"task {entry.actor_name!r}: a message's pool_on_full must be 'requeue', 'drop' or "
                f"'raise' (options travel as JSON); declare a callable on the actor instead, got {on_full!r}"
            )
        merged = dict(entry.declared)
        for group in _GROUPS:
            # ``once_key=None`` on one message turns deduplication off for it, companions and all.
            if f"{group}key" in overrides and overrides[f"{group}key"] is None:
                merged = {k: v for k, v in merged.items() if not k.startswith(group)}
        merged.update(overrides)
        policy = self._parse(entry.actor_name, entry.fn, merged)
        with self._lock:
            if len(self._overridden) >= _MAX_OVERRIDE_POLICIES:
                self._overridden.clear()
            self._overridden[cache_key] = policy
        return policy

    def _parse(self, actor_name: str, fn: Callable[..., Any], raw: Mapping[str, Any]) -> TaskPolicy | None:
        try:
            options = parse_task_options(actor_name, fn, raw)
        except CachifyTaskOptionError as exc:
            raise CachifyMessageOptionError(str(exc)) from None
        return TaskPolicy(options, self._cachify) if options.active else None
