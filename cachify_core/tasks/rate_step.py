"""The ``rate_*`` options in a delivery's admission: after dedup, before the pool slot.

Each bound (``rate_key`` + ``rate``, and each of ``rate_keys``) is one GCRA limiter
(:mod:`cachify_core.rates`), its key rendered from the task's arguments like any template.

* **Not handed over** (no reservation): with ``rate_on_limited="wait"`` and a delivery that can
  park, each bound *schedules* the run (``rate_schedule``: counted at the earliest time that
  bound admits it, 1 round trip per bound). All admit now: it goes on. Otherwise it is parked as
  a **timed entry** of the first bound's waiting room (``<key>-room``), due when the last bound
  allows it (``room_park_until``), and acknowledged; the sweep of any worker publishes it at
  that time, never earlier. As its place was counted when it parked, it needs no check when it
  comes back, so limits are never exceeded however many tasks wait, and no retry is spent.
  Other modes count now (``rate_acquire``) and, refused, drop, raise
  ``CachifyRateLimitedError``, return the callable's value, or (``"wait"`` where nothing can
  park: eager runs, stores without waiting rooms) back off through the broker for the reported
  time.
* **Handed over** (its message carries a reservation): ``room_arrive`` in that room. ``CLAIMED``:
  its time came, it goes on holding the claim (a lease of the room, renewed while it runs,
  ended at finish); ``DUPLICATE``: a copy of a claimed hand-over, acknowledged; ``UNKNOWN``: the
  reservation is not this room's (a pool's hand-over, whose rate was counted before it parked
  in the pool), it goes on.

Several bounds on different keys are counted one after the other (their keys may live on
different cluster nodes): a run refused by a later bound has used its place in the earlier
ones, which can only under-admit them, never over-admit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import leases
from ..backends.base import DEFAULT_MAX_WAITING, RateCheck, RateLimit, RoomSettings, RoomStatus
from ..errors import CachifyRateLimitedError
from ..instance import Cachify
from ..rooms import due_in, registry_key
from ..steps import Step, Steps
from ..tokens import new_token
from . import logs

if TYPE_CHECKING:
    from .policy import Admission, RunHandle, TaskPolicy

__all__ = ["rate_cancel_steps", "rate_release_steps", "rate_steps", "room_key"]


def room_key(full_key: str) -> str:
    """The waiting room of a rate limiter's timed entries (a key nothing else uses)."""
    return full_key + "-room"


def _keys(p: TaskPolicy, c: Cachify, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[str]:
    return [c.prefix + bound.key.format(args, kwargs) for bound in p.options.rate_bounds]


def _room(p: TaskPolicy, c: Cachify) -> RoomSettings:
    # A timed room has no slots of its own; a claimed arrival's lease lives as a pool slot does.
    return RoomSettings(
        registry=registry_key(c.prefix),
        max_size=0,
        slot_ttl_ms=p.slot_ttl_ms(),
        max_waiting=DEFAULT_MAX_WAITING,
    )


def rate_steps(
    p: TaskPolicy,
    c: Cachify,
    handle: RunHandle,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    reservation: str | None,
    payload: Callable[[], bytes] | None,
    asyncio: bool,
    started_key: str | None,
) -> Steps[tuple[Admission | None, bool]]:
    """``(None, _)``: the limits admit this run now, go on; else ``(admission, settled)``: the
    admission to return, and whether what it holds was already dealt with (parked, or a
    duplicate hand-over); if not, the caller releases it as for a full pool.
    ``started_key``: an until_started claim, kept without expiry if the run parks."""
    from .policy import Admission, Verdict

    o = p.options
    keys = _keys(p, c, args, kwargs)
    timed = room_key(keys[0])
    backend = c.async_backend if asyncio else c.sync_backend
    rooms = backend.supports_waiting_room
    if reservation is not None and rooms:
        room = _room(p, c)
        token = new_token()
        data = payload() if payload is not None else b""
        status = yield lambda b: b.room_arrive(timed, token, new_token(), data, room, reservation)
        if status is RoomStatus.CLAIMED:  # its time came
            handle.rate_room_key, handle.rate_token, handle.rate_room = timed, token, room
            handle.rate_claimed = reservation
            handle.rate_lease = leases.begin(c, "pool", timed, token, room.slot_ttl_ms, True, asyncio)
            if len(keys) == 1:
                return None, False  # counted when it parked
        elif status is RoomStatus.DUPLICATE:
            return (yield from p.parked_or_duplicate_steps(handle, status, None, timed, ())), True
        else:
            return None, False  # UNKNOWN: a pool's hand-over; its rate was counted before it parked there
    waits = o.rate_on_limited == "wait" and payload is not None and rooms
    # One bound that waits is scheduled: counted at its own time, exactly. Several are counted
    # now, in order, up to the first refusal; a refused run waits, uncounted, until the refusing
    # bound allows it and is counted then (scheduling one bound for another's later time would
    # hold that bound's capacity idle until then: GCRA keeps one time per limit, not a calendar).
    schedule = waits and len(keys) == 1
    checks: list[RateCheck] = []
    for key, bound in zip(keys, o.rate_bounds, strict=True):
        check = yield _count(key, bound.limits, o.rate_cost, schedule)
        checks.append(check)
        if not check.allowed:
            break
    if all(check.allowed for check in checks):
        return None, False
    delay_ms = checks[-1].retry_after_ms
    refused = o.rate_bounds[len(checks) - 1]
    where = f"rate {refused.key.template!r} ({refused.text})"
    if handle.rate_room_key is not None:  # a claimed arrival refused again: it parks anew
        yield from rate_release_steps(handle, retry=False)
    if waits and payload is not None:
        room = _room(p, c)
        entry_id = new_token()
        data = payload()
        got = yield lambda b: b.room_park_until(timed, entry_id, data, delay_ms, room)
        if got.status is RoomStatus.PARKED:
            due_in(c, delay_ms / 1000)  # this process's sweep wakes for it, if it runs one
            parked = yield from p.parked_or_duplicate_steps(
                handle, got.status, started_key, timed, got.handed
            )
            return parked, True
        logs.room_full(o.task_name, handle.task_id, timed, room.max_waiting)
    on_limited = o.rate_on_limited
    key_shown = keys[0][len(c.prefix) :]
    if callable(on_limited):
        return Admission(Verdict.RETURN, value=on_limited(*args, **kwargs), reason=f"{where} limited"), False
    if on_limited == "raise":
        raise CachifyRateLimitedError(key_shown, delay_ms / 1000, refused.text)
    if on_limited == "drop":
        reason = f"{where} does not admit it now (rate_on_limited='drop')"
        logs.skipped(o.task_name, handle.task_id, reason, logging.WARNING)
        return Admission(Verdict.SKIP, reason=reason), False
    # "wait" where nothing can park: back through the broker when the limit allows it
    return Admission(Verdict.REQUEUE, delay_s=delay_ms / 1000, reason=f"{where} limited"), False


def _count(key: str, limits: tuple[RateLimit, ...], cost: int, schedule: bool) -> Step:
    if schedule:
        return lambda b: b.rate_schedule(key, limits, cost)
    return lambda b: b.rate_acquire(key, limits, cost, True)


def rate_release_steps(handle: RunHandle, retry: bool) -> Steps[None]:
    """End a claimed timed arrival's lease (the claim finishes unless a retry carries it on)."""
    leases.end(handle.rate_lease)
    key, token, room = handle.rate_room_key, handle.rate_token, handle.rate_room
    handle.rate_room_key = None
    if key is not None and token is not None and room is not None:
        claimed = None if retry else handle.rate_claimed
        got = yield lambda b: b.room_release(key, token, room, claimed)
        handle.handed.extend(got.handed)


def rate_cancel_steps(
    p: TaskPolicy, c: Cachify, reservation: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Steps[None]:
    """A handed-over copy that will not run: its timed entry (if it is one) leaves the room, or
    the sweep would publish it again every lease."""
    if not p.options.rate_bounds:
        return
    timed = room_key(_keys(p, c, args, kwargs)[0])
    room = _room(p, c)
    yield lambda b: b.room_cancel(timed, reservation, room)
