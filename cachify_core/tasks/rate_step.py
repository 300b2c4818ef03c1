"""The ``rate_*`` options in a delivery's admission: after dedup, before the pool slot.

Each bound (``rate_key`` + ``rate``, and each of ``rate_keys``) is one GCRA limiter
(:mod:`cachify_core.rates`), its key rendered from the task's arguments like any template.
Every run is **counted when it starts**, never before, by every bound at once
(``rate_acquire_bounds``: on a single Redis server one atomic call, so no bound counts a run
another refuses; on Cluster one call per bound in order, up to the first refusal). However
late a worker gets to a run (a backlog in the queue, a slow consumer), the runs that start in
any window are the runs the limiter admitted in it.

* **Not handed over** (no reservation), refused, with ``rate_on_limited="wait"`` and a delivery
  that can park: it is parked, uncounted, as a **timed entry** of the refusing bound's waiting
  room (``<key>-room``, entry id ``<index>~<token>`` with several bounds), due when that bound
  said it would admit it and no sooner than ``cost x`` the bound's shortest emission interval
  after the entry parked before it (``room_park_until``'s spacing): the runs waiting for one
  limit come back one by one, at the rate it admits them, not together. It is acknowledged. The
  sweep publishes it at its time, never earlier (the parking process's sweep wakes for it, and
  every sweep wakes at the soonest due time it saw: :mod:`cachify_core.rooms`). No retry is
  spent and nothing waits in a worker's memory.
* **Handed over** (its message carries a reservation): ``room_arrive`` in the room of the bound
  it waited for (its entry id says which). ``CLAIMED``: its time came; every bound counts it as
  above (a bound that other runs got to first refuses it, and it waits again, at the back).
  ``TAKEN_OVER``: it succeeds a copy that was counted and then died or was requeued (a full
  pool): it goes on, not counted again.
  ``DUPLICATE``: a copy of a claimed hand-over, acknowledged. ``UNKNOWN``: the reservation is
  not a timed entry's (a pool's hand-over, whose rate was counted before it parked in the
  pool): it goes on.
* **Other modes** count now and, refused, drop, raise ``CachifyRateLimitedError``, return the
  callable's value, or (``"wait"`` where nothing can park: eager runs, stores without waiting
  rooms) back off through the broker for the reported time.

A claimed timed arrival holds a lease in that room (renewed while it runs, ended at finish)
so a copy of it that arrives meanwhile is recognised. Round trips on a single server: 1 to be
counted (Cluster: 1 per bound); a waiting run 1 more to park; its hand-over 1 to arrive plus 1
to be counted, and 1 at finish (in the finish's batch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import leases
from ..backends.base import RateCheck, RoomStatus
from ..errors import CachifyRateLimitedError
from ..instance import Cachify
from ..rooms import due_in
from ..steps import Step, Steps
from ..tokens import new_token
from . import logs

if TYPE_CHECKING:
    from .policy import Admission, RunHandle, TaskPolicy

__all__ = ["rate_cancel_steps", "rate_release_step", "rate_release_steps", "rate_steps", "room_key"]


def room_key(full_key: str) -> str:
    """The waiting room of a rate limiter's timed entries (a key nothing else uses)."""
    return full_key + "-room"


def _keys(p: TaskPolicy, c: Cachify, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[str]:
    return [c.prefix + bound.key.format(args, kwargs) for bound in p.options.rate_bounds]


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
    backend = c.async_backend if asyncio else c.sync_backend
    rooms = backend.supports_waiting_room
    if reservation is not None and rooms:
        timed = room_key(keys[_bound_of(reservation, len(keys))])
        room = p.timed_room(c)
        token = new_token()
        data = payload() if payload is not None else b""
        status = yield lambda b: b.room_arrive(timed, token, new_token(), data, room, reservation)
        if status in (RoomStatus.CLAIMED, RoomStatus.TAKEN_OVER):  # its time came
            handle.rate_room_key, handle.rate_token, handle.rate_room = timed, token, room
            handle.rate_claimed = reservation
            handle.rate_lease = leases.begin(c, "pool", timed, token, room.slot_ttl_ms, True, asyncio)
            if status is RoomStatus.TAKEN_OVER:
                return None, False  # the run it succeeds was counted (and may have started)
        elif status is RoomStatus.DUPLICATE:
            return (yield from p.parked_or_duplicate_steps(handle, status, None, timed, ())), True
        else:
            return None, False  # UNKNOWN: a pool's hand-over; its rate was counted before it parked there
    waits = o.rate_on_limited == "wait" and payload is not None and rooms
    bounds = [(key, bound.limits) for key, bound in zip(keys, o.rate_bounds, strict=True)]
    check: RateCheck = yield lambda b: b.rate_acquire_bounds(bounds, o.rate_cost, True)
    if check.allowed:
        return None, False
    index, delay_ms = check.refused, check.retry_after_ms
    refused = o.rate_bounds[index]
    where = f"rate {refused.key.template!r} ({refused.text})"
    if handle.rate_room_key is not None:  # a claimed arrival refused again: it waits anew
        yield from rate_release_steps(handle)
    if waits and payload is not None:
        timed = room_key(keys[index])
        room = p.timed_room(c)
        entry_id = f"{index}~{new_token()}" if len(keys) > 1 else new_token()
        data = payload()
        spacing_ms = -(-o.rate_cost * min(limit.emission_us for limit in refused.limits) // 1000)
        got = yield lambda b: b.room_park_until(timed, entry_id, data, delay_ms, room, spacing_ms)
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


def _bound_of(reservation: str, bounds: int) -> int:
    """The bound a timed entry waits for: its id starts with ``<index>~`` when the task has
    several (``0``: one bound, or a reservation that is not a timed entry's)."""
    head, sep, _ = reservation.partition("~")
    if sep and head.isdigit() and int(head) < bounds:
        return int(head)
    return 0


def rate_release_step(handle: RunHandle, finished: bool) -> Step | None:
    """The step that ends a claimed timed arrival (its lease stops now): ``finished`` unless
    the same message comes back carrying the reservation (a retry, a requeue), whose copy takes
    the claim over. ``None`` when the run holds no such claim. Released at most once."""
    leases.end(handle.rate_lease)
    key, token, room = handle.rate_room_key, handle.rate_token, handle.rate_room
    handle.rate_room_key = None
    if key is None or token is None or room is None:
        return None
    claimed = handle.rate_claimed if finished else None
    return lambda b: b.room_release(key, token, room, claimed)


def rate_release_steps(handle: RunHandle) -> Steps[None]:
    """Finish a claimed timed arrival's claim now, on its own (the run will not go on)."""
    step = rate_release_step(handle, finished=True)
    if step is not None:
        got = yield step
        handle.handed.extend(got.handed)


def rate_cancel_steps(
    p: TaskPolicy, c: Cachify, reservation: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Steps[None]:
    """A handed-over copy that will not run: its timed entry (if it is one) leaves the room, or
    the sweep would publish it again every lease."""
    if not p.options.rate_bounds:
        return
    keys = _keys(p, c, args, kwargs)
    timed = room_key(keys[_bound_of(reservation, len(keys))])
    room = p.timed_room(c)
    yield lambda b: b.room_cancel(timed, reservation, room)
