"""Task declarations: the cachify options among a task's labels, bound to the core's
:class:`~cachify_core.tasks.TaskPolicies`, and the task function wrapped (:mod:`.wrapper`).

Declared options are read typed from the declared task (``broker.find_task(name).labels``),
never from a message, whose labels Taskiq sends as text. They are validated when the task is
declared if the middleware was added to the broker first (it swaps in
:class:`CachifyDecoratedTask` as the broker's ``decorator_class``), otherwise when the
middleware is added or, at the latest, at broker startup.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from taskiq.abc.broker import AsyncBroker
from taskiq.decor import AsyncTaskiqDecoratedTask
from taskiq.message import TaskiqMessage

from cachify_core.instance import Cachify
from cachify_core.tasks import TaskPolicies, TaskPolicy, is_task_option

from . import envelope
from .arguments import Signature
from .wrapper import WRAPPED_ATTR, wrap

__all__ = ["CachifyDecoratedTask", "Declaration", "Declarations"]

logger = logging.getLogger("cachify.taskiq")

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: Taskiq renames a task's function ``<name>__taskiq_original`` (so its process pool can import
#: it by name); messages name the function as its user wrote it.
_TASKIQ_RENAME = "__taskiq_original"


@dataclass(frozen=True)
class Declaration:
    """One task as cachify sees it."""

    name: str
    func: Callable[..., Any]  #: the user's function (the task's ``original_func`` is our wrapper)
    policies: TaskPolicies
    signature: Signature
    #: The declared cachify labels as a message carries them: a label sent with another text
    #: is a per-message override.
    sent_labels: Mapping[str, str]

    @classmethod
    def of(
        cls, task: AsyncTaskiqDecoratedTask[Any, Any], func: Callable[..., Any], cachify: Cachify | None
    ) -> Declaration:
        labels = {k: v for k, v in task.labels.items() if is_task_option(k)}
        policies = TaskPolicies(task.task_name, _as_written(func), labels, cachify)
        sent = {k: envelope.as_sent(v) for k, v in labels.items()}
        return cls(task.task_name, func, policies, Signature.of(func, task.task_name), sent)

    def policy_to_send(self, message: TaskiqMessage) -> TaskPolicy:
        """The policy of a message about to be sent; its overrides validated and carried in
        :data:`~.envelope.OPTIONS_LABEL`. A re-send (retry, requeue) carries them already."""
        carried = envelope.carried_options(message.labels)
        if carried is not None:
            return self.policies.with_overrides(carried)
        overrides = envelope.option_labels(self.name, message, self.sent_labels)
        policy = self.policies.with_overrides(overrides)
        if overrides:
            envelope.write_options(message, overrides)
        return policy

    def policy_received(self, message: TaskiqMessage) -> TaskPolicy:
        return self.policies.with_overrides(envelope.carried_options(message.labels))


def _as_written(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` under the name its user gave it, for the core's messages (key templates)."""
    name = getattr(func, "__name__", "")
    if not name.endswith(_TASKIQ_RENAME):
        return func

    @functools.wraps(func)
    def as_written(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    as_written.__name__ = name.removesuffix(_TASKIQ_RENAME)
    as_written.__qualname__ = as_written.__qualname__.removesuffix(_TASKIQ_RENAME)
    return as_written


#: The declarations of each broker that has a CachifyMiddleware, for CachifyDecoratedTask.
_by_broker: weakref.WeakKeyDictionary[AsyncBroker, Declarations] = weakref.WeakKeyDictionary()


class Declarations:
    """The declared tasks of one broker (the one the middleware was added to)."""

    def __init__(self, cachify: Cachify | None) -> None:
        self._cachify = cachify
        self._broker: AsyncBroker | None = None
        self._by_name: dict[str, Declaration] = {}

    def attach(self, broker: AsyncBroker) -> None:
        self._broker = broker
        _by_broker[broker] = self
        if broker.decorator_class is AsyncTaskiqDecoratedTask:
            broker.decorator_class = CachifyDecoratedTask
        elif not issubclass(broker.decorator_class, CachifyDecoratedTask):
            logger.debug(
                "cachify: %s uses its own decorator class; task options are checked at startup",
                type(broker).__name__,
            )
        self.adopt_all()

    def adopt_all(self) -> None:
        if self._broker is not None:
            for task in self._broker.get_all_tasks().values():
                self.adopt(task)

    def adopt(self, task: AsyncTaskiqDecoratedTask[Any, Any]) -> Declaration:
        """Validate ``task``'s options and wrap its function (once)."""
        func: Callable[..., Any] = getattr(task.original_func, WRAPPED_ATTR, task.original_func)
        known = self._by_name.get(task.task_name)
        if known is None or known.func is not func:
            known = Declaration.of(task, func, self._cachify)
            self._by_name[task.task_name] = known
        if getattr(task.original_func, WRAPPED_ATTR, None) is not func:
            task.original_func = wrap(func, known.name)
        return known

    def find(self, task_name: str) -> Declaration | None:
        """The declaration of ``task_name``; a task registered some other way is adopted now."""
        declaration = self._by_name.get(task_name)
        if declaration is None and self._broker is not None:
            task = self._broker.find_task(task_name)
            if task is not None:
                declaration = self.adopt(task)
        return declaration

    def __iter__(self) -> Iterator[Declaration]:
        return iter(list(self._by_name.values()))


class CachifyDecoratedTask(AsyncTaskiqDecoratedTask[_P, _R]):
    """Taskiq's task class, validating cachify options when ``@broker.task(...)`` runs."""

    def __init__(
        self,
        broker: AsyncBroker,
        task_name: str,
        original_func: Callable[_P, _R],
        labels: dict[str, Any],
        return_type: type[_R] | None = None,
    ) -> None:
        super().__init__(broker, task_name, original_func, labels, return_type)
        declarations = _by_broker.get(broker)
        if declarations is not None:
            declarations.adopt(self)
