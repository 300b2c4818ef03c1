"""A sent message's arguments as the worker's function will receive them.

The dedup hold is claimed on the sending side and checked on the worker, so both must bind
the ``once_key`` template to the same values. The worker's function gets the arguments
after a trip through JSON (``TaskiqMessage.model_dump(mode="json")``: tuples become lists,
datetimes strings, dataclasses and pydantic models dicts) and then Taskiq's own cast to the
parameters' annotations (``parse_params``). The sending side repeats both steps here, so
``"order-{order.id}"`` works on an annotated dataclass argument on either side.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic_core import to_jsonable_python
from taskiq.message import TaskiqMessage
from taskiq.receiver.params_parser import parse_params

__all__ = ["Signature", "worker_arguments"]

logger = logging.getLogger("cachify.taskiq")

#: Values that come out of a JSON round trip unchanged: no conversion needed.
_PLAIN = frozenset({str, int, float, bool, type(None)})


@dataclass(frozen=True)
class Signature:
    """What Taskiq's receiver reads from a task function to cast its arguments."""

    parameters: inspect.Signature
    hints: dict[str, Any]

    @classmethod
    def of(cls, func: Callable[..., Any], task_name: str) -> Signature:
        try:
            hints = get_type_hints(func)
        except Exception as exc:  # an unresolvable annotation: Taskiq's receiver fails on it too
            logger.warning("cachify: task %s: type hints unreadable (%s); arguments not cast", task_name, exc)
            hints = {}
        return cls(inspect.signature(func), hints)


def _as_sent(value: Any) -> Any:
    return value if type(value) in _PLAIN else to_jsonable_python(value)


def worker_arguments(signature: Signature, message: TaskiqMessage) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` of ``message`` as the worker's receiver will pass them (no I/O)."""
    view = TaskiqMessage.model_construct(
        task_id=message.task_id,
        task_name=message.task_name,
        labels={},
        args=[_as_sent(a) for a in message.args],
        kwargs={k: _as_sent(v) for k, v in message.kwargs.items()},
    )
    parse_params(signature.parameters, signature.hints, view)
    return tuple(view.args), view.kwargs
