"""The cachify options of a Celery task: gathered from its class, checked against its function.

Celery turns every unknown ``@app.task(...)`` keyword into an attribute of the task class it
builds, so a task's options are the ``once_*``/``pool_*``/``cache_*`` attributes of that class
(and of its cachify bases, for class-based tasks). Key templates bind to the function the task
runs; for ``bind=True`` tasks and class-based ``run`` methods, ``self`` is not an argument of
the template. Everything here is validation and lookup: no I/O.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Mapping
from typing import Any

from cachify_core.instance import Cachify
from cachify_core.tasks import CachifyTaskOptionError, TaskPolicy, is_task_option, parse_task_options

__all__ = ["TaskPolicies", "class_function", "declared_options", "key_function", "task_name"]

#: Distinct per-call override sets remembered per task; past this the table starts over
#: (a workload with that many distinct overrides is unusual, and re-parsing costs ~20 µs).
MAX_VARIANTS = 256

_SELF = object()  # stands in for the task instance when binding a template to a method


def key_function(fun: Callable[..., Any], bound: bool) -> Callable[..., Any]:
    """What key templates bind to: ``fun``, or ``fun`` without its first parameter (``self``)."""
    return types.MethodType(fun, _SELF) if bound else fun


def class_function(cls: type) -> Callable[..., Any] | None:
    """The function a task class runs, as templates see it; ``None`` for an abstract class."""
    for klass in cls.__mro__:
        run = vars(klass).get("run")
        if run is None:
            continue
        if klass.__module__ == "celery.app.task":  # Celery's own Task.run: not a task yet
            return None
        if isinstance(run, staticmethod):  # @app.task(bind=False) stores staticmethod(fun)
            return run.__func__
        return key_function(run, bound=True) if callable(run) else None
    return None


def task_name(cls: type) -> str:
    name = getattr(cls, "name", None)
    return name if isinstance(name, str) and name else f"{cls.__module__}.{cls.__qualname__}"


def declared_options(cls: type, root: type) -> dict[str, Any]:
    """Every option-like attribute of ``cls`` and its bases below ``root``, nearest class winning.

    Read from the class dicts (not ``getattr``), so a callable ``pool_on_full`` stays a plain
    function instead of becoming a method of the task, and a misspelt option is still seen.
    """
    raw: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, root):
            raw.update((k, v) for k, v in vars(klass).items() if is_task_option(k))
    return raw


def canonical_overrides(task: str, overrides: Mapping[str, Any]) -> str:
    """Per-call overrides as the JSON text they travel as (and are cached under)."""
    try:
        return json.dumps(dict(overrides), sort_keys=True)
    except (TypeError, ValueError):
        raise CachifyTaskOptionError(
            f"task {task!r}: per-call options travel in message headers and must be JSON values "
            f"(declare a callable pool_on_full on the task instead), got {dict(overrides)!r}"
        ) from None


class TaskPolicies:
    """The policy a task declares, plus the variants its per-call overrides ask for."""

    def __init__(
        self,
        name: str,
        function: Callable[..., Any],
        raw: Mapping[str, Any],
        cachify: Callable[[], Cachify],
    ) -> None:
        self.name = name
        self.function = function
        self.raw = dict(raw)
        self._cachify = cachify
        self.declared = TaskPolicy(parse_task_options(name, function, raw), cachify)
        self._variants: dict[str, TaskPolicy] = {}

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> TaskPolicy:
        """The policy for one call; ``overrides`` are validated like declared options."""
        if not overrides:
            return self.declared
        if not isinstance(overrides, Mapping):
            raise CachifyTaskOptionError(
                f"task {self.name!r}: per-call options must be a dict, got {overrides!r}"
            )
        text = canonical_overrides(self.name, overrides)
        policy = self._variants.get(text)
        if policy is None:
            options = parse_task_options(self.name, self.function, {**self.raw, **overrides})
            policy = TaskPolicy(options, self._cachify)
            if len(self._variants) >= MAX_VARIANTS:
                self._variants.clear()
            self._variants[text] = policy
        return policy
