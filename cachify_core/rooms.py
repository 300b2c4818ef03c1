"""Waiting rooms at the core level: the registry's name and one sweep tick, written once.

The primitives (``room_*``, ``rooms``) and what they store are specified in
:mod:`cachify_core.backends.base`. This module holds what every caller of them shares:

* :func:`registry_key`: the one registry per key prefix that lists rooms holding entries;
* :func:`sweep_steps`: one sweep tick as backend steps (:mod:`cachify_core.steps`): read the
  registry (one round trip, and all of the tick while nothing waits anywhere), then sweep at
  most ``max_rooms`` rooms, starting at a rotating offset so a long registry is covered
  fairly across ticks. The caller publishes the hand-overs it returns;
* :func:`start_sweeper` / :func:`start_async_sweeper`: that tick every ``interval_s`` on the
  per-process renewal thread (:mod:`cachify_core.leases`) or a task of the running loop — and
  sooner when a timed entry is due sooner: a tick wakes the next one at the earliest due time
  the rooms report, and :func:`due_in` (called when this process parks a timed entry) brings
  the next tick forward, so a rate-limited task is published at its time, not up to a tick late.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Sequence

from . import leases
from .backends.base import Handover
from .errors import CachifyUnsupportedError
from .instance import Cachify
from .leases import Periodic
from .steps import Step, Steps, run_async, run_blocking

__all__ = [
    "DEFAULT_SWEEP_LIMIT",
    "DEFAULT_SWEEP_ROOMS",
    "due_in",
    "registry_key",
    "sweep",
    "sweep_async",
    "sweep_steps",
]

#: Hand-overs of each kind one room's sweep makes at most per tick.
DEFAULT_SWEEP_LIMIT = 100
#: Rooms one tick sweeps at most (each 1 round trip); the rest are reached on later ticks.
DEFAULT_SWEEP_ROOMS = 50

_offsets = itertools.count()


def registry_key(prefix: str) -> str:
    """The registry of the rooms under ``prefix`` (on Redis ``{<prefix>waiting-rooms}``)."""
    return f"{prefix}waiting-rooms"


def sweep_steps(registry: str, limit: int, max_rooms: int) -> Steps[list[Handover]]:
    """One tick: the hand-overs to publish now, from at most ``max_rooms`` listed rooms."""
    handed, _ = yield from tick_steps(registry, limit, max_rooms)
    return handed


#: Steps a sweeper runs at the start of each tick, before the rooms' sweep; the hand-overs they
#: made are published with the tick's (the task layer's owed releases: ``tasks/owed.py``).
First = Callable[[], Steps[Sequence[Handover]]]


def tick_steps(
    registry: str, limit: int, max_rooms: int, first: First | None = None
) -> Steps[tuple[list[Handover], float | None]]:
    """One tick: the hand-overs to publish now, and the seconds until the soonest timed entry
    of the rooms swept is due (``None``: none). ``first``: steps to run before the sweep."""
    if isinstance(max_rooms, bool) or not isinstance(max_rooms, int) or max_rooms < 1:
        raise ValueError(f"sweep: max_rooms must be an int >= 1, got {max_rooms!r}")
    handed: list[Handover] = [] if first is None else list((yield from first()))
    keys: tuple[str, ...] = yield lambda b: b.rooms(registry)
    if len(keys) > max_rooms:
        start = next(_offsets) * max_rooms % len(keys)
        keys = (keys[start:] + keys[:start])[:max_rooms]
    soonest: float | None = None
    for key in keys:
        result = yield _sweep_one(key, registry, limit)
        handed.extend(result.handed)
        if result.next_due_s is not None:
            soonest = result.next_due_s if soonest is None else min(soonest, result.next_due_s)
    return handed, soonest


def _sweep_one(key: str, registry: str, limit: int) -> Step:
    return lambda b: b.room_sweep(key, registry, limit)


def sweep(
    c: Cachify, limit: int = DEFAULT_SWEEP_LIMIT, max_rooms: int = DEFAULT_SWEEP_ROOMS
) -> list[Handover]:
    """One blocking sweep tick over ``c``'s rooms (see :func:`sweep_steps`)."""
    return run_blocking(sweep_steps(registry_key(c.prefix), limit, max_rooms), c.sync_backend)


async def sweep_async(
    c: Cachify, limit: int = DEFAULT_SWEEP_LIMIT, max_rooms: int = DEFAULT_SWEEP_ROOMS
) -> list[Handover]:
    """The asyncio twin of :func:`sweep`."""
    return await run_async(sweep_steps(registry_key(c.prefix), limit, max_rooms), c.async_backend)


#: Seconds between two sweep ticks of one process: how late, at most, a slot freed by expiry
#: (a dead holder) or a lost hand-over moves the queue beyond its TTL or lease.
DEFAULT_SWEEP_INTERVAL_S = 1.0


def start_sweeper(
    c: Cachify,
    publish: Callable[[list[Handover]], object],
    interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
    limit: int = DEFAULT_SWEEP_LIMIT,
    max_rooms: int = DEFAULT_SWEEP_ROOMS,
    first: First | None = None,
) -> Periodic:
    """Sweep ``c``'s rooms every ``interval_s`` on the per-process renewal thread and pass each
    tick's hand-overs (when there are any) to ``publish``; ``first`` runs at the start of each
    tick (:data:`First`). ``stop()`` the result to end it.

    A tick that fails (store or broker down) is logged and the next one comes as usual: an
    unpublished hand-over is returned again once its lease passes. Start one per process, after
    a fork (the renewal thread does not survive one). Raises
    :class:`~cachify_core.errors.CachifyUnsupportedError` on a backend without waiting rooms."""
    _check_supported(c.sync_backend.supports_waiting_room, c)
    registry = registry_key(c.prefix)

    def tick() -> float | None:
        handed, soonest = run_blocking(tick_steps(registry, limit, max_rooms, first), c.sync_backend)
        if handed:
            publish(handed)
        return soonest  # the renewal thread runs the next tick by then, if sooner

    return _track(c, leases.renewer.every(f"waiting-room sweep {c.prefix}", interval_s, tick))


def start_async_sweeper(
    c: Cachify,
    publish: Callable[[list[Handover]], Awaitable[object]],
    interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
    limit: int = DEFAULT_SWEEP_LIMIT,
    max_rooms: int = DEFAULT_SWEEP_ROOMS,
    first: First | None = None,
) -> Periodic:
    """The asyncio twin of :func:`start_sweeper`: a task on the running loop awaits
    ``publish(handed)``."""
    _check_supported(c.async_backend.supports_waiting_room, c)
    registry = registry_key(c.prefix)

    async def tick() -> float | None:
        handed, soonest = await run_async(tick_steps(registry, limit, max_rooms, first), c.async_backend)
        if handed:
            await publish(handed)
        return soonest

    return _track(c, leases.every_async(f"waiting-room sweep {c.prefix}", interval_s, tick))


#: This process's sweepers per (pid, id of the instance), for :func:`due_in`: a forked child
#: starts with none of its parent's.
_running: dict[tuple[int, int], list[Periodic]] = {}


def _track(c: Cachify, periodic: Periodic) -> Periodic:
    key = (os.getpid(), id(c))
    sweepers = [p for p in _running.get(key, []) if not p.stopped]
    sweepers.append(periodic)
    _running[key] = sweepers
    return periodic


def due_in(c: Cachify, delay_s: float) -> None:
    """A timed entry of ``c``'s rooms is due in ``delay_s``: this process's sweepers of ``c``
    run by then (no I/O; nothing to do where none runs — another process's sweep, or this
    one's next tick, publishes it)."""
    for periodic in _running.get((os.getpid(), id(c)), ()):
        periodic.run_within(delay_s)


def _check_supported(supported: bool, c: Cachify) -> None:
    if not supported:
        raise CachifyUnsupportedError(
            f"{c.async_backend.name} has no waiting rooms (supports_waiting_room is False): nothing to sweep"
        )
