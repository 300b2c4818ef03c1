"""Once holds a finished run could not give back because the store was unreachable, kept in
this process and given back by the first admission that reaches the store again.

A run whose finish fails to reach the store keeps its outcome, and what it held ends by its
TTL. For a slot (``pool_slot_ttl``) or a rate claim that is seconds; for a once hold it is
``once_ttl``, an hour by default, during which the key refuses every new send of that task.
So the release of such a hold is remembered here, per :class:`~cachify_core.Cachify`
instance, and sent again (owner-checked, so repeating it can only release this task id's own
hold) before the next admission's own steps on that instance: 1 round trip, and only when
something is owed.

Nothing here survives the process: a worker that dies owing releases leaves those holds to
their TTL, as before. At most :data:`MAX_OWED` are kept per instance (the oldest give way).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..steps import Batch, Step, Steps

if TYPE_CHECKING:
    from ..instance import Cachify

__all__ = ["MAX_OWED", "count", "owe", "settle_steps"]

#: Releases kept per Cachify instance; beyond it, the oldest is left to its TTL.
MAX_OWED = 10_000

_lock = threading.Lock()
#: instance → {(once key, task id): None}, oldest first.
_owed: weakref.WeakKeyDictionary[Cachify, OrderedDict[tuple[str, str], None]] = weakref.WeakKeyDictionary()


def owe(c: Cachify, key: str, task_id: str) -> None:
    """Remember that ``task_id``'s hold on ``key`` could not be given back. No I/O."""
    with _lock:
        owed = _owed.setdefault(c, OrderedDict())
        owed[(key, task_id)] = None
        while len(owed) > MAX_OWED:
            owed.popitem(last=False)


def count(c: Cachify) -> int:
    """How many releases ``c`` owes now."""
    with _lock:
        return len(_owed.get(c, ()))


def _owed_now(c: Cachify) -> list[tuple[str, str]]:
    owed = _owed.get(c)  # read without the lock first: almost always empty, on every admission
    if not owed:
        return []
    with _lock:
        return list(owed)


def _settled(c: Cachify, released: list[tuple[str, str]]) -> None:
    with _lock:
        owed = _owed.get(c, OrderedDict())
        for item in released:
            owed.pop(item, None)


def _release(key: str, task_id: str) -> Step:
    return lambda b: b.lock_release(key, task_id)


def settle_steps(c: Cachify) -> Steps[int]:
    """Give back what ``c`` owes, in one batch (nothing when it owes nothing); how many were
    released (a hold that had expired, or was never this id's, counts for nothing). Raises the
    backend's error, everything still owed, when the store is still unreachable. Two admissions
    settling at once may both send a release: harmless, it is owner-checked."""
    sent = _owed_now(c)
    if not sent:
        return 0
    steps = [_release(key, task_id) for key, task_id in sent]
    results = (yield Batch(*steps)) if len(steps) > 1 else ((yield steps[0]),)
    _settled(c, sent)
    return sum(1 for got in results if got is True)
