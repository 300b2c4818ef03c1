"""``install(app)``: make ``CachifyTask`` an existing app's task class, checking options at the
decorator.

``Celery(task_cls=CachifyTask)`` alone checks a task's options when Celery builds the task
class, which for an app that is not finalized yet happens at its first use (``delay``, the
worker starting), not at ``@app.task``. ``install`` also wraps ``app.task`` so that a bad or
unknown option raises right at the decorator.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from cachify_core.instance import Cachify
from cachify_core.tasks import CachifyTaskOptionError, is_task_option, parse_task_options

from .declaration import key_function
from .hooks import CachifyTask
from .publish import guard_send_task

__all__ = ["install"]


def install(app: Any, cachify: Cachify | None = None) -> type[CachifyTask]:
    """Make ``CachifyTask`` the default base of ``app``'s tasks; returns the class used.

    Call it before declaring tasks. ``cachify`` binds the app's tasks to that instance instead
    of the global one. Tasks declared with an explicit ``base=`` that is not a ``CachifyTask``
    and given cachify options are rejected at the decorator, since their options would be
    ignored.
    """
    if "Task" in vars(app) and not issubclass(app.Task, CachifyTask):
        raise RuntimeError(
            f"install({app.main!r}): the app already built its task class; call install(app) before "
            "declaring or using tasks, or pass Celery(task_cls=CachifyTask)"
        )
    base: type[CachifyTask] = CachifyTask
    if cachify is not None:
        base = type("CachifyTask", (CachifyTask,), {"cachify": cachify, "__module__": __name__})
    app.task_cls = base
    app._custom_task_cls_used = True  # Celery's Django fixup reads it to leave our class alone
    if not getattr(app.task, "_cachify_checked", False):
        app.task = _checking(app, app.task)
    guard_send_task(app)
    return base


def _checking(app: Any, decorate: Callable[..., Any]) -> Callable[..., Any]:
    """``app.task`` that validates cachify options when it is applied to a function."""

    @functools.wraps(decorate)
    def task(*args: Any, **opts: Any) -> Any:
        if len(args) == 1 and callable(args[0]):
            check_declaration(app, args[0], opts)
            return decorate(*args, **opts)
        inner = decorate(*args, **opts)

        def create(fun: Callable[..., Any]) -> Any:
            check_declaration(app, fun, opts)
            return inner(fun)

        return create

    task._cachify_checked = True  # type: ignore[attr-defined]
    return task


def check_declaration(app: Any, fun: Callable[..., Any], opts: dict[str, Any]) -> None:
    """Validate the cachify options among ``@app.task`` keywords for ``fun`` (no I/O)."""
    name = opts.get("name") or app.gen_task_name(fun.__name__, fun.__module__)
    raw = {k: v for k, v in opts.items() if is_task_option(k)}
    base = opts.get("base")
    if base is not None and not (isinstance(base, type) and issubclass(base, CachifyTask)):
        if raw:
            raise CachifyTaskOptionError(
                f"task {name!r}: {', '.join(sorted(raw))} need a CachifyTask base, but base={base!r}"
            )
        return
    cachify = opts.get("cachify")
    if cachify is not None and not isinstance(cachify, Cachify):
        raise CachifyTaskOptionError(
            f"task {name!r}: cachify must be a Cachify instance or None, got {cachify!r}"
        )
    parse_task_options(name, key_function(fun, bool(opts.get("bind"))), raw)
