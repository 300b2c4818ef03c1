"""The cachify options of a Celery task: gathered from its class, checked against its function.

Celery turns every unknown ``@app.task(...)`` keyword into an attribute of the task class it
builds, so a task's options are the ``once_*``/``pool_*``/``cache_*`` attributes of that class
(and of its cachify bases, for class-based tasks). Key templates bind to the function the task
runs; for ``bind=True`` tasks and class-based ``run`` methods, ``self`` is not an argument of
the template. The options themselves are parsed by the core (``cachify_core.tasks.TaskPolicies``).
Everything here is lookup: no I/O.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from cachify_core.tasks import is_task_option

__all__ = ["class_function", "declared_options", "key_function", "task_name"]

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
