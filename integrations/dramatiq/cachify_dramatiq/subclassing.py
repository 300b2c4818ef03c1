"""Giving one of Dramatiq's objects a cachify subclass of its own class.

cachify changes a few behaviours of Dramatiq's consumer threads and consumers
(:mod:`.delays`, :mod:`.polling`) on the instances it is given, not on Dramatiq's classes: the
instance's class is swapped for a subclass made from it. Each subclass is made once per
(class, maker) and reused, so every instance of a class gets the same one, and makers compose
(a subclass made by one is the base class of the next).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Maker", "give_subclass"]

#: Makes the subclass of a class (the same class always gives an equivalent subclass).
Maker = Callable[[type[Any]], type[Any]]

_made: dict[tuple[type[Any], Maker], type[Any]] = {}
_lock = threading.Lock()


def give_subclass(obj: Any, make: Maker) -> None:
    """Swap ``obj``'s class for ``make``'s subclass of it (made on first use)."""
    cls = type(obj)
    with _lock:
        found = _made.get((cls, make))
        if found is None:
            found = _made[(cls, make)] = make(cls)
    obj.__class__ = found
