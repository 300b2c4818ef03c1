"""Releases a finished run could not make because the store was unreachable, kept in this
process and made by the first admission, or the first waiting-room sweep tick, that reaches
the store again.

A run whose finish fails to reach the store keeps its outcome, and what it held would end by
its TTL: for a once hold that is ``once_ttl``, an hour by default, during which the key refuses
every new send of that task; for a pool slot it is ``pool_slot_ttl`` (60 s by default), during
which the pool is one slot short and the tasks parked in its waiting room wait for it. So such
releases are remembered here, per :class:`~cachify_core.Cachify` instance, and sent again
(owner-checked: a hold by its task id, a slot by its token) before the next admission's own
steps on that instance, and at the start of the next sweep tick of its waiting rooms: 1 round
trip, and only when something is owed. A slot is kept only when its token was made for that
run alone (Dramatiq's and Taskiq's): a token named after the delivery (Celery's) is presented
again by a redelivered copy, which takes the slot over, and a late release would free the
copy's slot; such a slot is left to ``pool_slot_ttl``. (A hold is released by task id, and a
copy of the same task id holds it as the same run would.) A slot's release hands the freed slot on as any release does: the hand-overs come back
with the settlement, for the caller to publish (a slot the sweep already handed on, its lease
having run out meanwhile, is released by nobody twice: the repeated release finds no slot of
that token and only moves the queue).

Nothing here survives the process: a worker that dies owing releases leaves those holds and
slots to their TTL, as before. At most :data:`MAX_OWED` are kept per instance (the oldest give
way). Rate-limit claims are not kept: they end by their TTL, which is seconds.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..backends.base import Handover, RoomRelease
from ..steps import Batch, Step, Steps

if TYPE_CHECKING:
    from ..instance import Cachify

__all__ = ["MAX_OWED", "count", "owe", "owe_slot", "settle_steps"]

#: Releases kept per Cachify instance; beyond it, the oldest is left to its TTL.
MAX_OWED = 10_000

#: What a kept release gives back: ("hold", once key, task id) or ("slot", pool key, token).
_What = tuple[str, str, str]

_lock = threading.Lock()
#: instance → {what: the release step}, oldest first.
_owed: weakref.WeakKeyDictionary[Cachify, OrderedDict[_What, Step]] = weakref.WeakKeyDictionary()


def _keep(c: Cachify, what: _What, release: Step) -> None:
    with _lock:
        owed = _owed.setdefault(c, OrderedDict())
        owed[what] = release
        while len(owed) > MAX_OWED:
            owed.popitem(last=False)


def owe(c: Cachify, key: str, task_id: str) -> None:
    """Remember that ``task_id``'s hold on ``key`` could not be given back. No I/O."""
    _keep(c, ("hold", key, task_id), lambda b: b.lock_release(key, task_id))


def owe_slot(c: Cachify, key: str, token: str, release: Step) -> None:
    """Remember that ``token``'s slot in pool ``key`` could not be given back; ``release`` is
    the step the finish tried (``room_release`` or ``pool_release``, owner-checked by
    ``token``). No I/O."""
    _keep(c, ("slot", key, token), release)


def count(c: Cachify) -> int:
    """How many releases ``c`` owes now."""
    with _lock:
        return len(_owed.get(c, ()))


def _owed_now(c: Cachify) -> list[tuple[_What, Step]]:
    owed = _owed.get(c)  # read without the lock first: almost always empty, on every admission
    if not owed:
        return []
    with _lock:
        return list(owed.items())


def _settled(c: Cachify, released: list[_What]) -> None:
    with _lock:
        owed = _owed.get(c, OrderedDict())
        for what in released:
            owed.pop(what, None)


def settle_steps(c: Cachify) -> Steps[tuple[Handover, ...]]:
    """Make every release ``c`` owes, in one batch (nothing when it owes nothing); the
    hand-overs the slot releases made, to publish now. Raises the backend's error, everything
    still owed, when the store is still unreachable. Two callers settling at once may both send
    a release: harmless, each is owner-checked."""
    sent = _owed_now(c)
    if not sent:
        return ()
    steps = [release for _, release in sent]
    results = (yield Batch(*steps)) if len(steps) > 1 else ((yield steps[0]),)
    _settled(c, [what for what, _ in sent])
    return tuple(h for got in results if isinstance(got, RoomRelease) for h in got.handed)
