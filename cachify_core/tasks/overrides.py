"""Per-message option overrides: one parser, one validation, one cache and one meaning for
every framework.

A message may override its task's declared options (``apply_async(..., once_ttl=60)``,
``send_with_options(once_key=None)``, ``kicker().with_labels(once_raise=True)``). The rules:

* Overrides are validated like declared options, when the message is sent; an unknown name
  or a bad value raises :class:`CachifyTaskOptionError` naming the task and the option, and
  nothing is sent.
* ``<group>_key=None`` (``once_key``, ``pool_key``, ``cache_key``) turns that feature off for
  the message, together with the declared companions of that key.
* Overrides travel in the message, so their values must be JSON values; a callable
  ``pool_on_full`` can only be declared on the task.
* The worker parses the same overrides again from the message; parsed variants are cached
  per task (:data:`MAX_VARIANTS`), keyed by their canonical JSON text.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from ..instance import Cachify
from .options import CachifyTaskOptionError, is_task_option, parse_task_options
from .policy import TaskPolicy

__all__ = ["MAX_VARIANTS", "TaskPolicies", "split_overrides"]

#: Distinct override sets whose parsed policies are kept per task (least recently used goes);
#: a producer that renders keys into overrides instead of templates would otherwise grow it
#: forever, and re-parsing one costs ~20 µs.
MAX_VARIANTS = 256

_GROUPS = ("once_", "pool_", "cache_")


def split_overrides(options: dict[str, Any]) -> dict[str, Any]:
    """Remove cachify's options from a send call's keyword options and return them."""
    return {name: options.pop(name) for name in [n for n in options if is_task_option(n)]}


class TaskPolicies:
    """A task's declared policy and the variants that per-message overrides ask for."""

    def __init__(
        self,
        name: str,
        function: Callable[..., Any],
        declared: Mapping[str, Any],
        cachify: Cachify | Callable[[], Cachify] | None = None,
    ) -> None:
        self.name = name
        self.function = function
        self.raw = {k: v for k, v in declared.items() if is_task_option(k)}
        self._cachify = cachify
        self.declared = TaskPolicy(parse_task_options(name, function, self.raw), cachify)
        self._variants: OrderedDict[str, TaskPolicy] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether the declared options turn any feature on."""
        return self.declared.options.active

    def canonical(self, overrides: object) -> str:
        """The overrides as canonical JSON text (their cache key); rejects what cannot travel."""
        if not isinstance(overrides, Mapping):
            raise CachifyTaskOptionError(
                f"task {self.name!r}: per-message options must be a mapping of option names to "
                f"values, got {overrides!r}"
            )
        if "pool_on_full" in overrides and callable(overrides["pool_on_full"]):
            raise CachifyTaskOptionError(
                f"task {self.name!r}: a per-message pool_on_full must be 'requeue', 'drop' or 'raise' "
                "(options travel in the message and must be JSON values); declare a callable on the task instead"
            )
        try:
            return json.dumps(dict(overrides), sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):
            raise CachifyTaskOptionError(
                f"task {self.name!r}: per-message options travel in the message and must be JSON "
                f"values, got {dict(overrides)!r}"
            ) from None

    def with_overrides(self, overrides: object) -> TaskPolicy:
        """The policy for one message; ``overrides`` validated like declared options."""
        if overrides is None or (isinstance(overrides, Mapping) and not overrides):
            return self.declared
        text = self.canonical(overrides)
        with self._lock:
            policy = self._variants.get(text)
            if policy is not None:
                self._variants.move_to_end(text)
                return policy
        assert isinstance(overrides, Mapping)
        policy = TaskPolicy(
            parse_task_options(self.name, self.function, self._merged(overrides)), self._cachify
        )
        with self._lock:
            self._variants[text] = policy
            while len(self._variants) > MAX_VARIANTS:
                self._variants.popitem(last=False)
        return policy

    def _merged(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(self.raw)
        for group in _GROUPS:
            key = f"{group}key"
            if key in overrides and overrides[key] is None:
                # Off for this message: the declared companions go too (given companions stay,
                # so ``once_key=None, once_ttl=5`` is reported as a companion without its key).
                merged = {k: v for k, v in merged.items() if not k.startswith(group)}
        merged.update((k, v) for k, v in overrides.items() if not (k.endswith("_key") and v is None))
        unknown_shape = [k for k in overrides if not is_task_option(k)]
        if unknown_shape:
            raise CachifyTaskOptionError(
                f"task {self.name!r}: {', '.join(sorted(unknown_shape))} is not a cachify option "
                "(cachify's options start with once_, pool_ or cache_)"
            )
        return merged
