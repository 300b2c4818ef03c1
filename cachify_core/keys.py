"""Key templates: ``'order-{order_id}'`` bound to a function's arguments.

Rules (py-cachify 3.1's, plus checks at decoration time):

* Named fields name parameters; defaults apply; attribute and index access work
  (``'{day.year}'``, ``'{cfg[region]}'``). Values of ``**kwargs`` are named fields too.
* Positional fields (``{}``, ``{0}``) index ``*args`` when the function has ``*args``;
  otherwise they index the positional parameters in order, so ``'sum-{}-{}'`` on
  ``def f(a, b)`` means ``'sum-{a}-{b}'``.
* A template naming a parameter the function lacks raises :class:`CachifyKeyError` when the
  decorator is applied, naming the field and the function.

Formatting costs no I/O; for plain signatures it avoids ``inspect.Signature.bind`` (several
microseconds) with a zip over the parameter names.
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Callable, Mapping
from typing import Any

from .errors import CachifyKeyError

__all__ = ["KeyTemplate", "func_name"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def func_name(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


class _Anything:
    """Stand-in argument for the decoration-time dry run: every attribute and item exists."""

    def __getattr__(self, _name: str) -> _Anything:
        return self

    def __getitem__(self, _key: object) -> _Anything:
        return self

    def __format__(self, _spec: str) -> str:
        return ""


class KeyTemplate:
    """A template compiled against one function's signature.

    ``postfix`` keeps features apart (``'cached'``, ``'lock'``, ``'once'``, ``'pool'``): the full
    key is ``f'{template.format(...)}-{postfix}'`` as in py-cachify.
    """

    __slots__ = (
        "_constant",
        "_defaults",
        "_fast",
        "_func",
        "_names",
        "_names_set",
        "_positional_names",
        "_signature",
        "_uses_positional",
        "_var_keyword",
        "_var_positional",
        "postfix",
        "template",
    )

    def __init__(self, template: str, func: Callable[..., Any], postfix: str) -> None:
        if not isinstance(template, str):
            raise TypeError(f"key must be a str, got {type(template).__name__} for {func_name(func)}")
        self.template = template
        self.postfix = postfix
        self._func = func
        self._signature = inspect.signature(func)
        params = list(self._signature.parameters.values())
        self._names = tuple(p.name for p in params if p.kind in _POSITIONAL or p.kind == p.KEYWORD_ONLY)
        self._names_set = frozenset(self._names)
        self._positional_names = tuple(p.name for p in params if p.kind in _POSITIONAL)
        self._defaults = {p.name: p.default for p in params if p.default is not p.empty}
        self._var_positional = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), None)
        self._var_keyword = next((p.name for p in params if p.kind == p.VAR_KEYWORD), None)
        self._fast = (
            self._var_positional is None
            and self._var_keyword is None
            and all(p.kind == p.POSITIONAL_OR_KEYWORD for p in params)
        )
        named, positional_count = self._fields()
        self._uses_positional = positional_count > 0
        self._validate(named, positional_count)
        self._constant = f"{template}-{postfix}" if not named and not positional_count else None

    def _fields(self) -> tuple[set[str], int]:
        named: set[str] = set()
        auto = 0
        highest = -1
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as exc:
            raise CachifyKeyError(
                f"key template {self.template!r} of {func_name(self._func)} is malformed: {exc}"
            ) from None
        for _literal, field, _spec, _conv in parsed:
            if field is None:
                continue
            root = field.split(".", 1)[0].split("[", 1)[0]
            if root == "":
                highest = max(highest, auto)
                auto += 1
            elif root.isdigit():
                highest = max(highest, int(root))
            else:
                named.add(root)
        return named, highest + 1

    def _validate(self, named: set[str], positional_count: int) -> None:
        where = f"key template {self.template!r} of {func_name(self._func)}"
        if self._var_keyword is None:
            unknown = sorted(named - self._names_set)
            if unknown:
                raise CachifyKeyError(
                    f"{where} names {', '.join(repr(u) for u in unknown)}, which "
                    f"{'is not a parameter' if len(unknown) == 1 else 'are not parameters'} "
                    f"of it (parameters: {', '.join(self._names) or 'none'})"
                )
        if self._var_positional is None and positional_count > len(self._positional_names):
            raise CachifyKeyError(
                f"{where} has {positional_count} positional field(s) but the function takes "
                f"{len(self._positional_names)} positional parameter(s)"
            )
        try:
            self.template.format(*[_Anything()] * positional_count, **{n: _Anything() for n in named})
        except (ValueError, IndexError, KeyError) as exc:
            raise CachifyKeyError(f"{where} cannot be formatted: {exc}") from None

    def bind(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and named values the template formats with (no I/O).

        Wrong arguments raise ``TypeError`` exactly as calling the function would, even when the
        key is constant or the call is then served from the cache.
        """
        names = self._names
        if (
            self._fast
            and len(args) <= len(names)
            and self._names_set.issuperset(kwargs)
            and not (kwargs and any(k in kwargs for k in names[: len(args)]))
        ):
            mapping = dict(self._defaults)
            mapping.update(zip(names, args, strict=False))
            mapping.update(kwargs)
            if len(mapping) == len(names):
                positional = (
                    tuple(mapping[n] for n in self._positional_names) if self._uses_positional else ()
                )
                return positional, mapping
        bound = self._signature.bind(*args, **kwargs)  # raises TypeError like the call would
        bound.apply_defaults()
        mapping = dict(bound.arguments)
        var_args: tuple[Any, ...] = ()
        if self._var_positional is not None:
            var_args = mapping.pop(self._var_positional, ())
        if self._var_keyword is not None:
            mapping.update(mapping.pop(self._var_keyword, {}))
        if self._var_positional is not None:
            return var_args, mapping
        return tuple(mapping[n] for n in self._positional_names), mapping

    def namespace(self, prefix: str) -> str:
        """The cache namespace of this template under ``prefix`` (one per cached function or
        task: ``clear_cache`` empties it). ``@cached`` and task ``cache_key`` share this layout."""
        return f"{prefix}{self.template}-{self.postfix}"

    def format(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The full key (without the instance prefix) for one call's arguments."""
        positional, mapping = self.bind(args, kwargs)
        if self._constant is not None:
            return self._constant
        try:
            return f"{self.template.format(*positional, **mapping)}-{self.postfix}"
        except (IndexError, KeyError, AttributeError, TypeError, ValueError) as exc:
            raise CachifyKeyError(
                f"arguments of {func_name(self._func)} do not fit key template {self.template!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
