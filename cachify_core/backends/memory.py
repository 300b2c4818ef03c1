"""The embedded in-memory backend: a real, thread-safe and asyncio-safe store.

One :class:`MemoryStore` serves both twins: :class:`MemoryStore` itself is the blocking
backend, :class:`AsyncMemoryBackend` its asyncio face. Every primitive runs under one mutex
held for microseconds (no I/O inside), so it is atomic across threads and never blocks an
event loop for longer than that.

Bounds: cache entries are evicted least-recently-used beyond ``max_entries``; held locks, pool
slots and rate-limit TATs live in their own tables and are never evicted (only expired).
Expired locks, slots and TATs are swept in amortised O(1) per acquire.

Rate limits are GCRA on ``time.monotonic`` in microseconds (system-wide on Linux, so a TAT
stays meaningful in a forked child), under the same mutex: exactly the Redis script's logic.

Waiting rooms (``room_*``, contract in base.py) keep the same state as the Redis scripts in
one :class:`_Room` per pool key, under the same mutex, on the monotonic clock: a reservation is
a slot named ``"#" + entry_id`` in the pool's table, so plain acquires count it as taken.

Waiting is exact: a failed acquire with ``waiting`` > 0 registers a waiter under the same
mutex as the release that signals it, so no wake-up is lost; blocking waiters sleep on a
per-key ``threading.Condition``, asyncio waiters on a future resolved through their own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from .base import (
    HANDOVER_BATCH,
    CacheRead,
    Call,
    Handover,
    RateCheck,
    RateLimit,
    RoomAdmission,
    RoomRelease,
    RoomSettings,
    RoomStats,
    RoomStatus,
    RoomSweep,
    call_each,
    check_park_until,
)

__all__ = ["DEFAULT_MAX_ENTRIES", "AsyncMemoryBackend", "MemoryStore"]

#: Enough for a busy process's hot set; at ~200 B of overhead per entry it stays in tens of MB.
DEFAULT_MAX_ENTRIES = 100_000

#: Acquires between sweeps of expired locks and slots (plus the tables' size, so a sweep's cost
#: is amortised to O(1) per acquire).
SWEEP_EVERY_ACQUIRES = 1024

_now = time.monotonic  # module-level so tests can fake the clock
_NO_META = ("0", "0")


def _deadline(ttl_ms: int | None) -> float:
    return math.inf if ttl_ms is None else _now() + ttl_ms / 1000.0


def _check_slots(room: RoomSettings, op: str) -> None:
    if room.max_size < 1:
        raise ValueError(f"{op}: RoomSettings.max_size must be >= 1 for a pool, got {room.max_size}")


def _keep_size(state: _Room, room: RoomSettings) -> RoomSettings:
    """``room`` with the room's stored max_size kept: timed entries and claims never take a
    pool's slots, so their callers (who may say 0) must not change its size."""
    if state.conf is not None and state.conf.max_size != room.max_size:
        return dataclasses.replace(room, max_size=state.conf.max_size)
    return room


def _timed_tail(state: _Room) -> float | None:
    """The latest due time of ``state``'s timed entries (``None``: none), as room_park_until.lua
    reads it: kept as one (due, entry) pair, looked for again only once that entry left."""
    tail = state.timed_tail
    if tail is not None and state.timed.get(tail[1], (None,))[0] == tail[0]:
        return tail[0]
    state.timed_tail = max(((due, entry) for entry, (due, _) in state.timed.items()), default=None)
    return None if state.timed_tail is None else state.timed_tail[0]


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Handed:
    """A hand-over not yet arrived: republish after ``lease_end``; its reservation ends at
    ``until`` (then it goes back first in line; a timed one has none: ``inf``)."""

    __slots__ = ("lease_end", "payload", "until")

    def __init__(self, lease_end: float, until: float, payload: bytes) -> None:
        self.lease_end = lease_end
        self.until = until
        self.payload = payload


class _Room:
    """One pool's waiting room (the memory twin of the ``{K}:room`` ... ``{K}:watch`` keys)."""

    __slots__ = (
        "claims",
        "conf",
        "handed",
        "queue",
        "started",
        "started_heap",
        "timed",
        "timed_heap",
        "timed_tail",
        "watch",
    )

    def __init__(self) -> None:
        self.queue: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # FIFO: (parked at, payload)
        self.timed: dict[str, tuple[float, bytes]] = {}  # entry -> (due, payload)
        self.timed_heap: list[tuple[float, int, str]] = []  # (due, seq, entry); stale ones skipped
        self.timed_tail: tuple[float, str] | None = None  # the latest (due, entry), if still timed
        self.handed: dict[str, _Handed] = {}
        self.started: dict[str, float] = {}  # claimed entry -> remembered until
        self.started_heap: list[tuple[float, int, str]] = []  # (until, seq, entry); stale ones skipped
        self.claims: dict[str, str] = {}  # claimed entry -> claimer token ("" finished or replaced)
        self.watch: dict[str, tuple[str, str, bytes]] = {}  # claimed entry -> (kind, copy id, payload)
        self.conf: RoomSettings | None = None

    def held(self) -> int:
        return len(self.queue) + len(self.timed) + len(self.handed) + len(self.watch)

    def remember(self, entry: str, until: float) -> None:
        self.started[entry] = until
        heapq.heappush(self.started_heap, (until, next(_timed_seq), entry))

    def park_first(self, entry: str, payload: bytes, now: float) -> None:
        """Put ``entry`` first in line (it was started before anyone waiting)."""
        at = now
        if self.queue:
            head = next(iter(self.queue.values()))[0]
            if head <= at:
                at = head - 1e-6
        self.queue[entry] = (at, payload)
        self.queue.move_to_end(entry, last=False)


_timed_seq = itertools.count()


_stores: weakref.WeakSet[MemoryStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Another thread may have held a store's mutex at fork(); the child has only this thread.
    for store in list(_stores):
        store._reset_after_fork()


class MemoryStore:
    """Process-local store; also the blocking backend over itself."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive int, got {max_entries!r}")
        self.name = "memory"
        self.max_entries = max_entries
        self._mutex = threading.Lock()
        self._cache: OrderedDict[str, tuple[bytes, str, float]] = OrderedDict()
        self._meta: dict[str, tuple[str, str]] = {}  # namespace -> (generation, fill epoch)
        self._locks: dict[str, tuple[str, float]] = {}
        self._pools: dict[str, dict[str, float]] = {}
        self._rates: dict[str, int] = {}  # "<key>:<limit name>" -> TAT, monotonic µs
        self._rooms: dict[str, _Room] = {}
        self._registries: dict[str, set[str]] = {}
        self._waiters: dict[str, int] = {}
        self._signals: dict[str, int] = {}
        self._conds: dict[str, threading.Condition] = {}
        self._async_waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._acquires_since_sweep = 0
        self._sweep_every = SWEEP_EVERY_ACQUIRES
        _stores.add(self)

    def _reset_after_fork(self) -> None:
        """In a forked child: a fresh mutex, and no waiters (they were the parent's threads and loops)."""
        self._mutex = threading.Lock()
        self._waiters.clear()
        self._signals.clear()
        self._conds.clear()
        self._async_waiters.clear()

    # -- cache entries -------------------------------------------------------------------
    def cache_get(self, ns: str, key: str) -> CacheRead:
        entry_key = f"{ns}\x00{key}"
        with self._mutex:
            gen, fill = self._meta.get(ns, _NO_META)
            entry = self._cache.get(entry_key)
            if entry is None:
                return CacheRead(None, gen, fill)
            if entry[1] != gen or entry[2] <= _now():
                del self._cache[entry_key]
                return CacheRead(None, gen, fill)
            self._cache.move_to_end(entry_key)
            return CacheRead(entry[0], gen, fill)

    def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> bool:
        expires_at = _deadline(ttl_ms)
        entry_key = f"{ns}\x00{key}"
        with self._mutex:
            if self._meta.get(ns, _NO_META)[0] != gen:
                return False
            self._cache[entry_key] = (value, gen, expires_at)
            self._cache.move_to_end(entry_key)
            if len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
            return True

    def cache_delete(self, ns: str, key: str) -> bool:
        with self._mutex:
            return self._cache.pop(f"{ns}\x00{key}", None) is not None

    def cache_clear(self, ns: str) -> None:
        with self._mutex:
            gen, fill = self._meta.get(ns, _NO_META)
            self._meta[ns] = (str(int(gen) + 1), fill)

    def cache_clear_fills(self, ns: str) -> None:
        with self._mutex:
            gen, fill = self._meta.get(ns, _NO_META)
            self._meta[ns] = (gen, str(int(fill) + 1))

    def __len__(self) -> int:
        return len(self._cache)

    # -- locks ---------------------------------------------------------------------------
    def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> bool:
        now = _now()
        with self._mutex:
            self._acquires_since_sweep += 1  # _maybe_sweep, inlined on the hot path
            if self._acquires_since_sweep > self._sweep_every:
                self._sweep(now)
            held = self._locks.get(key)
            if held is not None and held[1] > now:
                if waiting:
                    self._waiters[key] = self._waiters.get(key, 0) + 1
                return False
            self._locks[key] = (token, math.inf if ttl_ms is None else now + ttl_ms / 1000.0)
            return True

    def lock_release(self, key: str, token: str) -> bool:
        now = _now()
        with self._mutex:
            held = self._locks.get(key)
            if held is None or held[0] != token or held[1] <= now:
                return False
            del self._locks[key]
            if self._waiters:
                self._signal(key)
            return True

    def lock_extend(self, key: str, token: str, ttl_ms: int | None) -> bool:
        with self._mutex:
            held = self._locks.get(key)
            if held is None or held[0] != token or held[1] <= _now():
                return False
            self._locks[key] = (token, _deadline(ttl_ms))
            return True

    def lock_holder(self, key: str) -> str | None:
        with self._mutex:
            held = self._locks.get(key)
            if held is None or held[1] <= _now():
                return None
            return held[0]

    def lock_force_release(self, key: str) -> bool:
        with self._mutex:
            held = self._locks.pop(key, None)
            if held is None:
                return False
            self._signal(key)
            return held[1] > _now()

    # -- pools ---------------------------------------------------------------------------
    def _live_slots(self, key: str) -> dict[str, float]:
        slots = self._pools.get(key)
        if slots is None:
            return {}
        now = _now()
        expired = [t for t, exp in slots.items() if exp <= now]
        for t in expired:
            del slots[t]
        return slots

    def pool_acquire(self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float) -> bool:
        with self._mutex:
            self._maybe_sweep()
            slots = self._live_slots(key)
            if token not in slots and len(slots) >= max_size:  # a holder's token renews its slot
                if waiting:
                    self._waiters[key] = self._waiters.get(key, 0) + 1
                return False
            if not slots:
                slots = self._pools[key] = {}
            slots[token] = _deadline(ttl_ms)
            return True

    def pool_release(self, key: str, token: str) -> bool:
        with self._mutex:
            slots = self._live_slots(key)
            if slots.pop(token, None) is None:
                return False
            if not slots:
                self._pools.pop(key, None)
            self._signal(key)
            return True

    def pool_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        with self._mutex:
            slots = self._live_slots(key)
            if token not in slots:
                return False
            slots[token] = _deadline(ttl_ms)
            return True

    def pool_size(self, key: str) -> int:
        with self._mutex:
            return len(self._live_slots(key))

    # -- rate limits (GCRA) --------------------------------------------------------------
    def rate_acquire(self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool) -> RateCheck:
        return self.rate_acquire_bounds([(key, limits)], cost, consume)

    def rate_acquire_bounds(
        self, bounds: Sequence[tuple[str, Sequence[RateLimit]]], cost: int, consume: bool
    ) -> RateCheck:
        named = [
            (f"{key}:{limit.name}", limit, index)
            for index, (key, limits) in enumerate(bounds)
            for limit in limits
        ]
        with self._mutex:
            self._maybe_sweep()
            now = int(_now() * 1_000_000)
            tats = [max(self._rates.get(name, 0), now) for name, _, _ in named]
            excess = [
                tat + cost * limit.emission_us - now - limit.burst * limit.emission_us
                for tat, (_, limit, _) in zip(tats, named, strict=True)
            ]
            over_us = max(excess)
            allowed = over_us <= 0
            if allowed and consume:
                for i, (name, limit, _) in enumerate(named):
                    tats[i] += cost * limit.emission_us
                    self._rates[name] = tats[i]
            remaining = min(
                (limit.burst * limit.emission_us - (tat - now)) // limit.emission_us
                for tat, (_, limit, _) in zip(tats, named, strict=True)
            )
        refused = -1 if allowed else named[excess.index(over_us)][2]
        return RateCheck(allowed, 0 if allowed else -(-over_us // 1000), max(remaining, 0), refused)

    # -- waiting rooms (contract: base.py) ---------------------------------------------------
    supports_waiting_room = True
    pipelines = False  # nothing to save: no round trips

    def _room(self, key: str, now: float) -> _Room:
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = _Room()
        self._prune_room(key, room, now)
        return room

    def _claimer_live(self, key: str, room: _Room, entry: str, now: float) -> float | None:
        """The lease end of ``entry``'s claimer while it still runs."""
        claimer = room.claims.get(entry)
        if claimer:
            ends = self._pools.get(key, {}).get(claimer)
            if ends is not None and ends > now:
                return ends
        return None

    def _resolve_watch(self, key: str, room: _Room, entry: str, now: float) -> None:
        """The copy watching claim ``entry``: kept while the claimer runs, dropped once it
        finished, first in line (a timed one: due now) once the claimer died unfinished."""
        watching = room.watch.get(entry)
        if watching is None or self._claimer_live(key, room, entry, now) is not None:
            return
        del room.watch[entry]
        kind, copy, payload = watching
        if room.claims.get(entry):
            room.claims[entry] = ""  # the copy runs instead; later copies are duplicates
            if kind == "t":
                room.timed[copy] = (now, payload)
                heapq.heappush(room.timed_heap, (now, next(_timed_seq), copy))
            else:
                room.park_first(copy, payload, now)

    def _prune_room(self, key: str, room: _Room, now: float) -> None:
        while room.started_heap and room.started_heap[0][0] <= now:
            until, _seq, entry = heapq.heappop(room.started_heap)
            if room.started.get(entry) != until:
                continue  # a stale heap entry
            ends = self._claimer_live(key, room, entry, now)
            if ends is not None:
                room.remember(entry, ends)  # kept while the claimer runs
                continue
            self._resolve_watch(key, room, entry, now)
            del room.started[entry]
            room.claims.pop(entry, None)
        gone = sorted(((h.until, e) for e, h in room.handed.items() if h.until <= now), reverse=True)
        for _until, entry in gone:  # back first in line, the longest given up ending first
            room.park_first(entry, room.handed.pop(entry).payload, now)

    def _claimed_again(
        self, key: str, room: _Room, entry: str, kind: str, copy: str, payload: bytes, now: float
    ) -> str:
        """A delivery of claimed ``entry`` arrived again: "duplicate" or "takeover" (base.py)."""
        if self._claimer_live(key, room, entry, now) is not None:
            if entry not in room.watch:
                room.watch[entry] = (kind, copy, payload)
            return "duplicate"
        if room.claims.get(entry) and entry not in room.watch:
            return "takeover"
        self._resolve_watch(key, room, entry, now)
        return "duplicate"

    def _claim(self, room: _Room, entry: str, token: str, now: float, settings: RoomSettings) -> None:
        room.claims[entry] = token
        room.remember(entry, now + settings.started_ttl_ms / 1000.0)

    def _hand_over(
        self, room: _Room, entry: str, payload: bytes, now: float, conf: RoomSettings, reserved: bool = True
    ) -> Handover:
        until = now + conf.slot_ttl_ms / 1000.0 if reserved else math.inf
        room.handed[entry] = _Handed(now + conf.handover_lease_ms / 1000.0, until, payload)
        return Handover(entry, payload)

    def _hand_free(
        self, room: _Room, slots: dict[str, float], conf: RoomSettings, now: float, batch: int,
        out: list[Handover],
    ) -> int:  # fmt: skip
        """Reserve free slots for the oldest parked entries (at most ``batch``); the slots still free."""
        free = conf.max_size - len(slots)
        while free > 0 and batch > 0 and room.queue:
            entry, (_at, payload) = room.queue.popitem(last=False)
            slots["#" + entry] = now + conf.slot_ttl_ms / 1000.0
            out.append(self._hand_over(room, entry, payload, now, conf))
            free -= 1
            batch -= 1
        return free

    def _settle(self, key: str, room: _Room, registry: str | None, conf: RoomSettings | None) -> int:
        held = room.held()
        if held and conf is not None:
            room.conf = conf
        if registry is not None:
            listed = self._registries.get(registry)
            if held:
                if listed is None:
                    listed = self._registries[registry] = set()
                listed.add(key)
            elif listed is not None:
                listed.discard(key)
                if not listed:
                    del self._registries[registry]
        if not held and not room.started:
            del self._rooms[key]
        elif not held:
            room.conf = None
        return held

    def _slots_of(self, key: str) -> dict[str, float]:
        slots = self._live_slots(key)
        if not slots:
            slots = self._pools[key] = {}
        return slots

    def _tidy_slots(self, key: str, slots: dict[str, float]) -> None:
        if not slots:
            self._pools.pop(key, None)

    def room_acquire(
        self,
        key: str,
        token: str,
        entry_id: str,
        payload: bytes,
        room: RoomSettings,
        reservation: str | None = None,
    ) -> RoomAdmission:
        _check_slots(room, "room_acquire")
        with self._mutex:
            self._maybe_sweep()
            now = _now()
            slot_ends = now + room.slot_ttl_ms / 1000.0
            waiting = None if reservation else self._rooms.get(key)
            if waiting is not None and (
                entry_id in waiting.handed
                or entry_id in waiting.claims
                or waiting.started.get(entry_id, 0.0) > now
            ):
                # a redelivery of the delivery that parked under this id: its entry carries on
                return RoomAdmission(RoomStatus.DUPLICATE)
            # the common case: nobody is parked, so a free slot is ours (as pool_acquire)
            live = self._live_slots(key)
            if (
                not reservation
                and (waiting is None or not waiting.queue)
                and (len(live) < room.max_size or token in live)  # a holder's token renews its slot
            ):
                self._slots_of(key)[token] = slot_ends
                return RoomAdmission(RoomStatus.ACQUIRED)
            slots = self._slots_of(key)  # pruned before the room: claimers' slots are current
            state = self._room(key, now)
            status: RoomStatus | None = None
            takeover = False
            if reservation:
                if state.claims.get(reservation) == token and token in slots:
                    slots[token] = slot_ends  # its own claim, its reply lost: claimed again
                    status = RoomStatus.CLAIMED
                elif reservation in state.claims:
                    verdict = self._claimed_again(key, state, reservation, "s", entry_id, payload, now)
                    if verdict == "duplicate":
                        status = RoomStatus.DUPLICATE
                    else:
                        takeover = True
                elif reservation in state.queue:
                    # its hand-over ran out unclaimed and it waits first in line again: this is
                    # its delivery, which takes a free slot as that entry or is acknowledged
                    if next(iter(state.queue)) == reservation and len(slots) < room.max_size:
                        del state.queue[reservation]
                        slots[token] = slot_ends
                        self._claim(state, reservation, token, now, room)
                        status = RoomStatus.CLAIMED
                    else:
                        status = RoomStatus.PARKED
                elif slots.pop("#" + reservation, None) is not None:
                    slots[token] = slot_ends
                    state.handed.pop(reservation, None)
                    self._claim(state, reservation, token, now, room)
                    status = RoomStatus.CLAIMED
            already = entry_id in state.queue
            out: list[Handover] = []
            free = self._hand_free(state, slots, room, now, HANDOVER_BATCH, out)
            if status is not None:
                pass
            elif already:
                status = RoomStatus.PARKED
            elif not reservation and token in slots:
                slots[token] = slot_ends  # its own slot: lease renewed
                status = RoomStatus.ACQUIRED
            elif free > 0 and not state.queue:
                slots[token] = slot_ends
                status = RoomStatus.ACQUIRED
            elif len(state.queue) >= room.max_waiting:
                status = RoomStatus.FULL
            else:
                at = now
                if state.queue:
                    tail = next(reversed(state.queue.values()))[0]
                    at = max(at, tail)
                state.queue[entry_id] = (at, payload)
                status = RoomStatus.PARKED
            if takeover and status is RoomStatus.ACQUIRED:
                self._claim(state, reservation or "", token, now, room)
            elif takeover and status is RoomStatus.PARKED:
                self._claim(state, reservation or "", "", now, room)
            self._tidy_slots(key, slots)
            self._settle(key, state, room.registry, room)
            return RoomAdmission(status, tuple(out))

    def room_release(
        self, key: str, token: str, room: RoomSettings, claimed: str | None = None
    ) -> RoomRelease:
        with self._mutex:
            now = _now()
            slots = self._live_slots(key)
            released = slots.pop(token, None) is not None
            out: list[Handover] = []
            state = self._rooms.get(key)
            if state is not None and (state.queue or claimed):
                self._prune_room(key, state, now)
                if claimed and state.claims.get(claimed) == token:
                    state.claims[claimed] = ""
                    self._resolve_watch(key, state, claimed, now)
                slots = self._slots_of(key)
                self._hand_free(state, slots, room, now, HANDOVER_BATCH, out)
                self._settle(key, state, room.registry, room)
            self._tidy_slots(key, slots)
            if released and not out:
                self._signal(key)
            return RoomRelease(released, tuple(out))

    def room_cancel(self, key: str, entry_id: str, room: RoomSettings) -> RoomRelease:
        with self._mutex:
            now = _now()
            slots = self._slots_of(key)
            state = self._room(key, now)
            existed = False
            for table in (state.queue, state.timed, state.handed):
                existed = table.pop(entry_id, None) is not None or existed
            slots.pop("#" + entry_id, None)
            out: list[Handover] = []
            self._hand_free(state, slots, room, now, HANDOVER_BATCH, out)
            self._tidy_slots(key, slots)
            self._settle(key, state, room.registry, _keep_size(state, room))
            return RoomRelease(existed, tuple(out))

    def room_park_until(
        self, key: str, entry_id: str, payload: bytes, delay_ms: int, room: RoomSettings, spacing_ms: int = 0
    ) -> RoomAdmission:
        check_park_until(key, delay_ms, spacing_ms)
        with self._mutex:
            now = _now()
            self._live_slots(key)
            state = self._room(key, now)
            status = RoomStatus.PARKED
            if entry_id not in state.timed and entry_id not in state.handed:
                if len(state.timed) >= room.max_waiting:
                    status = RoomStatus.FULL
                else:
                    due = now + delay_ms / 1000.0
                    tail = _timed_tail(state) if spacing_ms else None
                    if tail is not None and tail + spacing_ms / 1000.0 > due:
                        due = tail + spacing_ms / 1000.0
                    if state.timed_tail is None or due >= state.timed_tail[0]:
                        state.timed_tail = (due, entry_id)
                    state.timed[entry_id] = (due, payload)
                    heapq.heappush(state.timed_heap, (due, next(_timed_seq), entry_id))
            self._settle(key, state, room.registry, _keep_size(state, room))
            return RoomAdmission(status)

    def room_arrive(
        self, key: str, token: str, entry_id: str, payload: bytes, room: RoomSettings, reservation: str
    ) -> RoomStatus:
        with self._mutex:
            now = _now()
            slots = self._slots_of(key)
            state = self._room(key, now)
            status = RoomStatus.UNKNOWN
            take = False
            if reservation in state.claims:
                verdict = self._claimed_again(key, state, reservation, "t", entry_id, payload, now)
                take = verdict == "takeover"
                status = RoomStatus.TAKEN_OVER if take else RoomStatus.DUPLICATE
            elif state.handed.pop(reservation, None) is not None:
                slots.pop("#" + reservation, None)  # a slot hand-over claimed this way gives its slot up
                take, status = True, RoomStatus.CLAIMED
            if take:
                slots[token] = now + room.slot_ttl_ms / 1000.0
                self._claim(state, reservation, token, now, room)
            self._tidy_slots(key, slots)
            self._settle(key, state, room.registry, _keep_size(state, room))  # a kept copy needs them
            return status

    def room_sweep(self, key: str, registry: str, limit: int) -> RoomSweep:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"room_sweep: limit must be an int >= 1, got {limit!r}")
        with self._mutex:
            now = _now()
            slots = self._slots_of(key)
            state = self._room(key, now)
            for entry in list(state.watch)[:limit]:
                self._resolve_watch(key, state, entry, now)
            out: list[Handover] = []
            conf = state.conf
            if conf is not None:
                self._hand_free(state, slots, conf, now, limit, out)
                late = sorted((h.lease_end, e) for e, h in state.handed.items() if h.lease_end <= now)
                for _end, entry in late[:limit]:
                    handed = state.handed[entry]
                    handed.lease_end = now + conf.handover_lease_ms / 1000.0
                    out.append(Handover(entry, handed.payload))
                due = 0
                while state.timed_heap and state.timed_heap[0][0] <= now and due < limit:
                    due_at, _seq, entry = heapq.heappop(state.timed_heap)
                    timed = state.timed.get(entry)
                    if timed is None or timed[0] != due_at:
                        continue  # a stale heap entry
                    del state.timed[entry]
                    out.append(self._hand_over(state, entry, timed[1], now, conf, reserved=False))
                    due += 1
            self._tidy_slots(key, slots)
            held = self._settle(key, state, registry, None)
            next_due = min((due_at for due_at, _ in state.timed.values()), default=None)
            return RoomSweep(tuple(out), held, None if next_due is None else max(0.0, next_due - now))

    def room_stats(self, key: str) -> RoomStats:
        with self._mutex:
            now = _now()
            state = self._rooms.get(key)
            if state is None:
                return RoomStats(0, 0.0, 0, 0, 0)
            oldest = next(iter(state.queue.values()))[0] if state.queue else now
            # a hand-over whose reservation ran out is parked again (the next call moves it back)
            back = sum(1 for h in state.handed.values() if h.until <= now)
            wait_s = max(0.0, math.floor((now - oldest) * 1000) / 1000.0)  # whole ms, as on Redis
            parked = len(state.queue) + back
            return RoomStats(parked, wait_s, len(state.handed) - back, len(state.timed), len(state.watch))

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        return call_each(self, calls)

    def rooms(self, registry: str) -> tuple[str, ...]:
        with self._mutex:
            return tuple(sorted(self._registries.get(registry, ())))

    # -- housekeeping --------------------------------------------------------------------
    def _maybe_sweep(self) -> None:
        self._acquires_since_sweep += 1
        if self._acquires_since_sweep > self._sweep_every:
            self._sweep(_now())

    def _sweep(self, now: float) -> None:
        """Drop expired locks and slots nobody touches again; amortised O(1) per acquire."""
        self._acquires_since_sweep = 0
        for key in [k for k, (_t, exp) in self._locks.items() if exp <= now]:
            del self._locks[key]
        for key in list(self._pools):
            if not self._live_slots(key):
                del self._pools[key]
        now_us = now * 1_000_000
        for key in [k for k, tat in self._rates.items() if tat <= now_us]:
            del self._rates[key]
        self._sweep_every = SWEEP_EVERY_ACQUIRES + len(self._locks) + len(self._pools) + len(self._rates)
        for key, room in list(self._rooms.items()):  # rooms left with only old started marks
            self._prune_room(key, room, now)
            if not room.held() and not room.started:
                del self._rooms[key]
        self._sweep_every = SWEEP_EVERY_ACQUIRES + len(self._locks) + len(self._pools) + len(self._rooms)

    # -- waiting -------------------------------------------------------------------------
    def _signal(self, key: str) -> None:
        """Called under the mutex by every release: wake one registered waiter of ``key``."""
        registered = self._waiters.get(key, 0)
        if not registered:
            return
        self._signals[key] = min(self._signals.get(key, 0) + 1, registered)
        futures = self._async_waiters.get(key)
        if futures:
            loop, fut = futures.pop(0)
            with contextlib.suppress(RuntimeError):  # that loop is closed; its waiter is gone
                loop.call_soon_threadsafe(_resolve, fut)
            return
        cond = self._conds.get(key)
        if cond is not None:
            cond.notify()

    def _finish_wait(self, key: str) -> bool:
        """Under the mutex: consume a signal if one is pending and deregister the waiter."""
        signals = self._signals.get(key, 0)
        if signals:
            self._signals[key] = signals - 1
        remaining = self._waiters.get(key, 1) - 1
        if remaining > 0:
            self._waiters[key] = remaining
        else:
            self._waiters.pop(key, None)
            self._signals.pop(key, None)
            self._conds.pop(key, None)
            self._async_waiters.pop(key, None)
        return bool(signals)

    def wait(self, key: str, timeout_s: float) -> bool:
        with self._mutex:
            if not self._signals.get(key):
                cond = self._conds.get(key)
                if cond is None:
                    cond = self._conds[key] = threading.Condition(self._mutex)
                cond.wait(max(timeout_s, 0.0))
            return self._finish_wait(key)

    async def await_signal(self, key: str, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        with self._mutex:
            if self._signals.get(key):
                return self._finish_wait(key)
            fut: asyncio.Future[None] = loop.create_future()
            self._async_waiters.setdefault(key, []).append((loop, fut))
        try:
            await asyncio.wait_for(fut, max(timeout_s, 0.0))
        except asyncio.TimeoutError:
            pass
        finally:
            with self._mutex:
                waiters = self._async_waiters.get(key)
                if waiters is not None and (loop, fut) in waiters:
                    waiters.remove((loop, fut))
                signalled = self._finish_wait(key)
        return signalled


class AsyncMemoryBackend:
    """The asyncio face of a :class:`MemoryStore` (no thread hops: each call is microseconds)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.name = store.name

    async def cache_get(self, ns: str, key: str) -> CacheRead:
        return self.store.cache_get(ns, key)

    async def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> bool:
        return self.store.cache_set(ns, key, value, ttl_ms, gen)

    async def cache_delete(self, ns: str, key: str) -> bool:
        return self.store.cache_delete(ns, key)

    async def cache_clear(self, ns: str) -> None:
        self.store.cache_clear(ns)

    async def cache_clear_fills(self, ns: str) -> None:
        self.store.cache_clear_fills(ns)

    async def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> bool:
        return self.store.lock_acquire(key, token, ttl_ms, waiting)

    async def lock_release(self, key: str, token: str) -> bool:
        return self.store.lock_release(key, token)

    async def lock_extend(self, key: str, token: str, ttl_ms: int | None) -> bool:
        return self.store.lock_extend(key, token, ttl_ms)

    async def lock_holder(self, key: str) -> str | None:
        return self.store.lock_holder(key)

    async def lock_force_release(self, key: str) -> bool:
        return self.store.lock_force_release(key)

    async def pool_acquire(
        self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float
    ) -> bool:
        return self.store.pool_acquire(key, token, max_size, ttl_ms, waiting)

    async def pool_release(self, key: str, token: str) -> bool:
        return self.store.pool_release(key, token)

    async def pool_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        return self.store.pool_extend(key, token, ttl_ms)

    async def pool_size(self, key: str) -> int:
        return self.store.pool_size(key)

    async def rate_acquire(
        self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool
    ) -> RateCheck:
        return self.store.rate_acquire(key, limits, cost, consume)

    async def rate_acquire_bounds(
        self, bounds: Sequence[tuple[str, Sequence[RateLimit]]], cost: int, consume: bool
    ) -> RateCheck:
        return self.store.rate_acquire_bounds(bounds, cost, consume)

    async def wait(self, key: str, timeout_s: float) -> bool:
        return await self.store.await_signal(key, timeout_s)

    supports_waiting_room = True
    pipelines = False  # nothing to save: no round trips

    async def room_acquire(
        self,
        key: str,
        token: str,
        entry_id: str,
        payload: bytes,
        room: RoomSettings,
        reservation: str | None = None,
    ) -> RoomAdmission:
        return self.store.room_acquire(key, token, entry_id, payload, room, reservation)

    async def room_release(
        self, key: str, token: str, room: RoomSettings, claimed: str | None = None
    ) -> RoomRelease:
        return self.store.room_release(key, token, room, claimed)

    async def room_park_until(
        self, key: str, entry_id: str, payload: bytes, delay_ms: int, room: RoomSettings, spacing_ms: int = 0
    ) -> RoomAdmission:
        return self.store.room_park_until(key, entry_id, payload, delay_ms, room, spacing_ms)

    async def room_cancel(self, key: str, entry_id: str, room: RoomSettings) -> RoomRelease:
        return self.store.room_cancel(key, entry_id, room)

    async def room_arrive(
        self, key: str, token: str, entry_id: str, payload: bytes, room: RoomSettings, reservation: str
    ) -> RoomStatus:
        return self.store.room_arrive(key, token, entry_id, payload, room, reservation)

    async def room_sweep(self, key: str, registry: str, limit: int) -> RoomSweep:
        return self.store.room_sweep(key, registry, limit)

    async def room_stats(self, key: str) -> RoomStats:
        return self.store.room_stats(key)

    async def batch(self, calls: Sequence[Call]) -> list[Any]:
        return self.store.batch(calls)

    async def rooms(self, registry: str) -> tuple[str, ...]:
        return self.store.rooms(registry)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
