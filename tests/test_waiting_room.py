"""Waiting rooms: park, hand over, claim, sweep, timed entries, the registry, inspection.

Every test runs on memory, Redis and Redis Cluster, once through the blocking backend and once
through the asyncio one (``kind``). TTLs are short (hundreds of ms); every wait for an expiry
is a bounded loop over a real observation (a sweep's result, the pool's size), never a bare
sleep followed by an assertion.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from cachify_core import Cachify
from cachify_core.backends.base import (
    Handover,
    RoomAdmission,
    RoomRelease,
    RoomSettings,
    RoomStats,
    RoomStatus,
    RoomSweep,
)
from cachify_core.rooms import registry_key, start_async_sweeper, start_sweeper, sweep, sweep_async
from cachify_core.tokens import new_token

from .conftest import WITH_CLUSTER
from .support import KINDS, WAIT_S, started

pytestmark = pytest.mark.parametrize("backend", WITH_CLUSTER)

#: Whole-ms rounding of the server clock against the test's monotonic clock.
CLOCK_SLACK_S = 0.005


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Room:
    """One pool's room driven through the sync or the async backend, as the test's ``kind``."""

    def __init__(self, c: Cachify, kind: str, name: str, **settings: Any) -> None:
        self.c = c
        self.kind = kind
        self.key = f"{c.prefix}{name}-pool"
        self.registry = registry_key(c.prefix)
        settings.setdefault("max_size", 1)
        settings.setdefault("slot_ttl_ms", 5_000)
        self.settings = RoomSettings(registry=self.registry, **settings)

    async def _call(self, name: str, *args: Any) -> Any:
        if self.kind == "sync":
            return getattr(self.c.sync_backend, name)(*args)
        return await getattr(self.c.async_backend, name)(*args)

    async def acquire(self, token: str, entry: str, reservation: str | None = None) -> RoomAdmission:
        payload = f"payload of {entry}".encode()
        return await self._call("room_acquire", self.key, token, entry, payload, self.settings, reservation)  # type: ignore[no-any-return]

    async def release(self, token: str, claimed: str | None = None) -> RoomRelease:
        return await self._call("room_release", self.key, token, self.settings, claimed)  # type: ignore[no-any-return]

    async def park_until(self, entry: str, delay_ms: int, spacing_ms: int = 0) -> RoomAdmission:
        payload = f"payload of {entry}".encode()
        return await self._call(  # type: ignore[no-any-return]
            "room_park_until", self.key, entry, payload, delay_ms, self.settings, spacing_ms
        )

    async def arrive(self, reservation: str, token: str = "arriver", copy: str = "copy") -> RoomStatus:
        payload = f"payload of {copy}".encode()
        return await self._call("room_arrive", self.key, token, copy, payload, self.settings, reservation)  # type: ignore[no-any-return]

    async def sweep(self, limit: int = 100) -> RoomSweep:
        return await self._call("room_sweep", self.key, self.registry, limit)  # type: ignore[no-any-return]

    async def stats(self) -> RoomStats:
        return await self._call("room_stats", self.key)  # type: ignore[no-any-return]

    async def rooms(self) -> set[str]:
        return set(await self._call("rooms", self.registry))

    async def size(self) -> int:
        return await self._call("pool_size", self.key)  # type: ignore[no-any-return]

    async def plain_acquire(self, token: str) -> bool:
        return await self._call("pool_acquire", self.key, token, self.settings.max_size, 5_000, False)  # type: ignore[no-any-return]

    async def swept_until(self, predicate: Any, timeout_s: float = WAIT_S) -> tuple[RoomSweep, float]:
        """Sweep every 10 ms until a sweep's result satisfies ``predicate``; it and when."""
        deadline = time.monotonic() + timeout_s
        for _ in range(int(timeout_s / 0.01) + 1):
            result = await self.sweep()
            if predicate(result):
                return result, time.monotonic()
            assert time.monotonic() < deadline, f"no sweep met the condition within {timeout_s}s"
            await asyncio.sleep(0.01)
        raise AssertionError("no sweep met the condition")


def ids(handed: tuple[Handover, ...]) -> list[str]:
    return [h.entry_id for h in handed]


def held_by(room: Room, *entries: str) -> tuple[Handover, ...]:
    return tuple(Handover(e, f"payload of {e}".encode()) for e in entries)


# -- FIFO hand-over ---------------------------------------------------------------------------------
async def test_release_hands_the_slot_to_the_oldest_parked_entry(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "fifo")
    assert await room.acquire("t0", "e0") == RoomAdmission(RoomStatus.ACQUIRED, ())
    for entry in ("e1", "e2", "e3"):
        assert await room.acquire(f"t-{entry}", entry) == RoomAdmission(RoomStatus.PARKED, ())
    stats = await room.stats()
    assert (stats.parked, stats.handed) == (3, 0)

    order: list[str] = []
    token, claimed = "t0", None
    for n in range(3):
        released = await room.release(token, claimed)
        assert released.released
        assert len(released.handed) == 1
        assert released.handed == held_by(room, released.handed[0].entry_id)  # payload as parked
        entry = released.handed[0].entry_id
        order.append(entry)
        stats = await room.stats()
        assert (stats.parked, stats.handed) == (2 - n, 1)
        claimed, token = entry, f"run-{entry}"
        assert (await room.acquire(token, f"fresh-{n}", reservation=entry)).status is RoomStatus.CLAIMED
        assert await room.size() == 1
    assert order == ["e1", "e2", "e3"]
    last = await room.release(token, claimed)
    assert last == RoomRelease(True, ())
    assert await room.stats() == RoomStats(0, 0.0, 0, 0)
    assert await room.size() == 0


async def test_a_newcomer_cannot_take_a_reserved_slot(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "reserved")
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t1", "e1")).status is RoomStatus.PARKED
    assert ids((await room.release("t0")).handed) == ["e1"]
    assert await room.size() == 1  # the reservation counts as taken
    assert (await room.acquire("t2", "e2")).status is RoomStatus.PARKED
    assert not await room.plain_acquire("t3")  # nor can a plain pool() acquire
    assert (await room.acquire("t1", "x", reservation="e1")).status is RoomStatus.CLAIMED
    assert await room.size() == 1


async def test_a_released_token_that_held_nothing_still_moves_the_queue(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "stranger", max_size=2)
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t1", "e1")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t2", "e2")).status is RoomStatus.PARKED
    assert await room.release("nobody") == RoomRelease(False, ())  # owner-checked: nothing freed
    assert await room.size() == 2
    assert ids((await room.release("t1")).handed) == ["e2"]


# -- bounds -------------------------------------------------------------------------------------
async def test_max_waiting_bounds_the_room_and_a_full_room_parks_nothing(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "bounded", max_waiting=2)
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t1", "e1")).status is RoomStatus.PARKED
    assert (await room.acquire("t2", "e2")).status is RoomStatus.PARKED
    assert (await room.acquire("t3", "e3")).status is RoomStatus.FULL
    assert (await room.stats()).parked == 2
    assert ids((await room.release("t0")).handed) == ["e1"]
    assert (await room.acquire("t3", "e3")).status is RoomStatus.PARKED  # room again
    assert (await room.acquire("t4", "e4")).status is RoomStatus.FULL


async def test_a_retried_park_of_the_same_entry_keeps_its_place(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "retried")
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t1", "e1")).status is RoomStatus.PARKED
    assert (await room.acquire("t2", "e2")).status is RoomStatus.PARKED
    assert (await room.acquire("t1", "e1")).status is RoomStatus.PARKED
    assert (await room.stats()).parked == 2
    assert ids((await room.release("t0")).handed) == ["e1"]


async def test_a_token_asking_again_keeps_its_slot_and_its_claim(cachify: Cachify, kind: str) -> None:
    """The same token asks again (its first reply was lost): it keeps the slot it holds, lease
    renewed, on a full pool and with others waiting; the claimer of a reservation claims it
    again. Any other token on the full pool parks, and another copy of the claim is a duplicate."""
    room = Room(cachify, kind, "again")
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED  # fast path: nobody waits
    assert (await room.acquire("t1", "e1")).status is RoomStatus.PARKED
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED  # with a waiter
    assert await room.size() == 1
    assert ids((await room.release("t0")).handed) == ["e1"]
    assert (await room.acquire("run", "c1", reservation="e1")).status is RoomStatus.CLAIMED
    assert (await room.acquire("run", "c1", reservation="e1")).status is RoomStatus.CLAIMED
    assert (await room.acquire("dup", "c2", reservation="e1")).status is RoomStatus.DUPLICATE
    assert await room.size() == 1
    assert await room.release("run", claimed="e1") == RoomRelease(True, ())
    assert (await room.acquire("run", "c1", reservation="e1")).status is RoomStatus.DUPLICATE  # it finished
    assert await room.size() == 0


async def test_free_slots_go_to_waiters_before_a_newcomer(cachify: Cachify, kind: str) -> None:
    """Slots freed by expiry (no release, no sweep yet): the next acquire hands them to the
    oldest waiters and takes one itself only if one is left over."""
    room = Room(cachify, kind, "expired", max_size=2, slot_ttl_ms=300)
    assert (await room.acquire("dead-1", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("dead-2", "e1")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t2", "w1")).status is RoomStatus.PARKED
    deadline = time.monotonic() + WAIT_S
    while await room.size() > 0:  # both holders "died": their leases run out
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    admitted = await room.acquire("t3", "newcomer")
    assert admitted == RoomAdmission(RoomStatus.ACQUIRED, held_by(room, "w1"))
    assert await room.size() == 2  # w1's reservation and the newcomer's slot


async def test_with_one_free_slot_and_a_waiter_the_newcomer_parks_behind_it(
    cachify: Cachify, kind: str
) -> None:
    room = Room(cachify, kind, "behind", slot_ttl_ms=300)
    assert (await room.acquire("dead", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t1", "w1")).status is RoomStatus.PARKED
    deadline = time.monotonic() + WAIT_S
    while await room.size() > 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert await room.acquire("t2", "w2") == RoomAdmission(RoomStatus.PARKED, held_by(room, "w1"))
    assert (await room.stats()).parked == 1


# -- arrival: claim and duplicates -------------------------------------------------------------------
async def test_arrival_claims_the_reservation_once(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "claim", slot_ttl_ms=400)
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t1", "e1")).status is RoomStatus.PARKED
    assert ids((await room.release("t0")).handed) == ["e1"]
    assert (await room.acquire("run", "again-1", reservation="e1")).status is RoomStatus.CLAIMED
    assert (await room.stats()).handed == 0  # confirmed: the payload is gone
    assert (await room.acquire("dup", "again-2", reservation="e1")).status is RoomStatus.DUPLICATE
    assert await room.size() == 1  # the duplicate took nothing
    assert (await room.stats()).watching == 1  # ...but is kept, in case the claimer dies
    # the claimed slot is the claimer's own lease, with a fresh ttl: it outlives the reservation's
    assert (await room.sweep()).handed == ()
    assert await room.release("run", claimed="e1") == RoomRelease(True, ())
    assert (await room.stats()).watching == 0  # the claim finished: the copy is dropped
    assert (await room.acquire("dup", "again-3", reservation="e1")).status is RoomStatus.DUPLICATE
    assert await room.stats() == RoomStats(0, 0.0, 0, 0, 0)
    assert await room.sweep() == RoomSweep((), 0)


async def test_an_unclaimed_reservation_runs_out_and_its_entry_is_handed_over_again(
    cachify: Cachify, kind: str
) -> None:
    """A hand-over whose publish is lost (and whose lease outlives its reservation, so no sweep
    republished it): its slot frees within slot_ttl_ms and the entry, first in line again, gets
    it back; a late delivery of it is matched to it, never run as a second task."""
    room = Room(cachify, kind, "lost", slot_ttl_ms=300, handover_lease_ms=10_000)
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t1", "e1")).status is RoomStatus.PARKED
    assert (await room.acquire("t2", "e2")).status is RoomStatus.PARKED
    handed_at = time.monotonic()
    assert ids((await room.release("t0")).handed) == ["e1"]  # ...and that publish is lost
    result, at = await room.swept_until(lambda r: r.handed != ())
    assert result == RoomSweep(held_by(room, "e1"), 2)  # e1 again, not e2: it waited longest
    assert at - handed_at >= 0.3 - CLOCK_SLACK_S  # not before e1's reservation ran out
    assert (await room.stats()).parked == 1
    assert (await room.acquire("run", "x", reservation="e1")).status is RoomStatus.CLAIMED
    assert (await room.acquire("dup", "y", reservation="e1")).status is RoomStatus.DUPLICATE


async def test_a_late_delivery_of_an_entry_back_in_line_is_matched_to_it(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "back", slot_ttl_ms=300, handover_lease_ms=10_000)
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t1", "e1")).status is RoomStatus.PARKED
    assert ids((await room.release("t0")).handed) == ["e1"]
    assert (await room.acquire("t2", "e2")).status is RoomStatus.PARKED
    assert (await room.acquire("holder", "e3")).status is RoomStatus.PARKED
    # another holder takes the slot e1's reservation frees (a plain pool() user, say)
    deadline = time.monotonic() + WAIT_S
    while not await room.plain_acquire("plain"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    stats = await room.stats()
    assert (stats.parked, stats.handed) == (3, 0)  # e1 is back in line, first
    # e1's delivery arrives while no slot is free: acknowledged, e1 keeps its place
    assert (await room.acquire("late", "e1-copy", reservation="e1")).status is RoomStatus.PARKED
    assert (await room.stats()).parked == 3
    assert await room.release("plain") == RoomRelease(True, held_by(room, "e1"))


async def test_cancel_drops_an_entry_and_frees_its_reservation(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "cancel")
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    for entry in ("e1", "e2", "e3"):
        assert (await room.acquire(f"t-{entry}", entry)).status is RoomStatus.PARKED
    assert ids((await room.release("t0")).handed) == ["e1"]
    # e1's delivery finds a cached result and will not run: its reservation goes to e2
    assert await room._call("room_cancel", room.key, "e1", room.settings) == RoomRelease(
        True, held_by(room, "e2")
    )
    assert await room._call("room_cancel", room.key, "e3", room.settings) == RoomRelease(True, ())
    assert await room._call("room_cancel", room.key, "e3", room.settings) == RoomRelease(False, ())
    stats = await room.stats()
    assert (stats.parked, stats.handed) == (0, 1)
    assert (await room.acquire("run", "x", reservation="e2")).status is RoomStatus.CLAIMED
    assert await room.release("run", claimed="e2") == RoomRelease(True, ())
    assert await room.sweep() == RoomSweep((), 0)


async def test_a_dead_holders_slot_moves_the_queue_through_the_sweep(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "dead", slot_ttl_ms=300)
    assert (await room.acquire("dead", "e0")).status is RoomStatus.ACQUIRED
    parked_at = time.monotonic()
    assert (await room.acquire("t1", "e1")).status is RoomStatus.PARKED
    assert (await room.sweep()).handed == ()
    result, at = await room.swept_until(lambda r: r.handed != ())
    assert result.handed == held_by(room, "e1")
    assert at - parked_at >= 0.3 - CLOCK_SLACK_S - 0.05  # the lease began just before the park
    assert await room.size() == 1
    assert (await room.acquire("run", "x", reservation="e1")).status is RoomStatus.CLAIMED


async def test_a_hand_over_not_confirmed_in_its_lease_is_returned_again_once_per_lease(
    cachify: Cachify, kind: str
) -> None:
    room = Room(cachify, kind, "lease", slot_ttl_ms=5_000, handover_lease_ms=250)
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t1", "e1")).status is RoomStatus.PARKED
    handed_at = time.monotonic()
    assert ids((await room.release("t0")).handed) == ["e1"]
    assert (await room.sweep()).handed == ()  # within the lease: nobody republishes
    result, at = await room.swept_until(lambda r: r.handed != ())
    assert result.handed == held_by(room, "e1")
    assert at - handed_at >= 0.25 - CLOCK_SLACK_S
    assert (await room.sweep()).handed == ()  # the lease was renewed: a second sweeper skips it
    again, at2 = await room.swept_until(lambda r: r.handed != ())
    assert again.handed == held_by(room, "e1")
    assert at2 - at >= 0.25 - CLOCK_SLACK_S - 0.02
    assert (await room.acquire("run", "x", reservation="e1")).status is RoomStatus.CLAIMED
    assert (await room.sweep()) == RoomSweep((), 0)
    assert await room.release("run", claimed="e1") == RoomRelease(True, ())


# -- timed entries ----------------------------------------------------------------------------------
async def test_a_timed_entry_is_returned_when_due_and_not_before(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "timed", max_size=0, handover_lease_ms=300)
    parked_at = time.monotonic()
    assert await room.park_until("late", 400) == RoomAdmission(RoomStatus.PARKED, ())
    assert await room.park_until("soon", 150) == RoomAdmission(RoomStatus.PARKED, ())
    assert (await room.stats()).timed == 2
    assert (await room.sweep()).handed == ()
    first, at = await room.swept_until(lambda r: r.handed != ())
    assert first.handed == held_by(room, "soon")
    assert at - parked_at >= 0.15 - CLOCK_SLACK_S
    second, at = await room.swept_until(lambda r: "late" in ids(r.handed))
    assert ids(second.handed) == ["late"]
    assert at - parked_at >= 0.4 - CLOCK_SLACK_S
    assert (await room.stats()).timed == 0
    assert await room.arrive("soon", token="run-soon") is RoomStatus.CLAIMED
    assert await room.size() == 1  # the claim's lease, in the room's own slot set
    assert await room.arrive("soon", token="dup") is RoomStatus.DUPLICATE
    assert await room.release("run-soon", claimed="soon") == RoomRelease(True, ())
    assert await room.arrive("soon", token="dup") is RoomStatus.DUPLICATE
    assert await room.arrive("never-parked") is RoomStatus.UNKNOWN
    # "late" was not confirmed: after its lease it is returned again, then claimed
    again, _ = await room.swept_until(lambda r: r.handed != ())
    assert again.handed == held_by(room, "late")
    assert await room.arrive("late", token="run-late") is RoomStatus.CLAIMED
    assert await room.release("run-late", claimed="late") == RoomRelease(True, ())
    assert await room.sweep() == RoomSweep((), 0)
    assert await room.stats() == RoomStats(0, 0.0, 0, 0, 0)


async def test_timed_entries_are_bounded_and_never_take_slots(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "timed-pool", max_size=1, max_waiting=2)
    assert (await room.park_until("a", 0)).status is RoomStatus.PARKED
    assert (await room.park_until("b", 60_000)).status is RoomStatus.PARKED
    assert (await room.park_until("c", 0)).status is RoomStatus.FULL
    assert (await room.park_until("a", 60_000)).status is RoomStatus.PARKED  # kept as it was
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED  # slots untouched
    result, _ = await room.swept_until(lambda r: r.handed != ())
    assert ids(result.handed) == ["a"]
    assert await room.size() == 1  # the timed hand-over reserved nothing


async def test_spaced_timed_entries_come_back_one_by_one(cachify: Cachify, kind: str) -> None:
    """Entries parked for the same limit, all due now, are spaced after the latest one: the
    sweep returns them one per ``spacing_ms``, not together (no herd)."""
    room = Room(cachify, kind, "spaced", max_size=0)
    parked_at = time.monotonic()
    for entry in ("a", "b", "c"):
        assert (await room.park_until(entry, 0, spacing_ms=250)).status is RoomStatus.PARKED
    first, _ = await room.swept_until(lambda r: r.handed != ())
    assert ids(first.handed) == ["a"]  # due at once; "b" and "c" 250 and 500 ms after it
    second, at = await room.swept_until(lambda r: r.handed != ())
    assert ids(second.handed) == ["b"]
    assert at - parked_at >= 0.25 - CLOCK_SLACK_S
    third, at = await room.swept_until(lambda r: r.handed != ())
    assert ids(third.handed) == ["c"]
    assert at - parked_at >= 0.5 - CLOCK_SLACK_S
    # a longer delay than the spacing wins; without spacing the tail is not looked at
    assert (await room.park_until("d", 0)).status is RoomStatus.PARKED
    swept, _ = await room.swept_until(lambda r: r.handed != ())
    assert ids(swept.handed) == ["d"]
    with pytest.raises(ValueError, match="spacing_ms"):
        await room.park_until("e", 0, spacing_ms=-1)


# -- registry and inspection --------------------------------------------------------------------------
async def test_the_registry_lists_rooms_with_entries_and_empties_when_they_drain(
    cachify: Cachify, kind: str
) -> None:
    a, b = Room(cachify, kind, "reg-a"), Room(cachify, kind, "reg-b", max_size=0)
    assert await a.rooms() == set()
    assert (await a.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    assert await a.rooms() == set()  # a slot taken is not a room with entries
    assert (await a.acquire("t1", "e1")).status is RoomStatus.PARKED
    assert (await b.park_until("x", 0)).status is RoomStatus.PARKED
    assert await a.rooms() == {a.key, b.key}
    assert ids((await a.release("t0")).handed) == ["e1"]
    assert await a.rooms() == {a.key, b.key}  # a hand-over still needs the sweep's eye
    assert (await a.acquire("run", "x", reservation="e1")).status is RoomStatus.CLAIMED
    assert (await a.sweep()) == RoomSweep((), 0)
    assert await a.rooms() == {b.key}
    assert ids((await b.sweep()).handed) == ["x"]
    assert await b.arrive("x", token="run-x") is RoomStatus.CLAIMED
    assert await b.sweep() == RoomSweep((), 0)
    assert await a.rooms() == set()


async def test_waiting_reports_exact_numbers(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "stats", max_size=1)
    p = cachify.pool("stats", 1)
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    before = time.monotonic()
    assert (await room.acquire("t1", "e1")).status is RoomStatus.PARKED
    after = time.monotonic()
    for entry in ("e2", "e3"):
        assert (await room.acquire(f"t-{entry}", entry)).status is RoomStatus.PARKED
    assert (await room.park_until("timed", 60_000)).status is RoomStatus.PARKED
    await asyncio.sleep(0.2)
    read_before = time.monotonic()
    stats = p.waiting() if kind == "sync" else await p.awaiting()
    read_after = time.monotonic()
    assert (stats.parked, stats.handed, stats.timed) == (3, 0, 1)
    assert read_before - after - CLOCK_SLACK_S <= stats.oldest_wait_s <= read_after - before + CLOCK_SLACK_S
    assert ids((await room.release("t0")).handed) == ["e1"]
    stats = p.waiting() if kind == "sync" else await p.awaiting()
    assert (stats.parked, stats.handed, stats.timed) == (2, 1, 1)
    assert stats.oldest_wait_s <= time.monotonic() - after + CLOCK_SLACK_S  # e2's wait now
    assert p.size() == 1  # the reservation
    empty = Room(cachify, kind, "nothing")
    assert await empty.stats() == RoomStats(0, 0.0, 0, 0)


async def test_one_sweep_tick_covers_every_listed_room(cachify: Cachify, kind: str) -> None:
    rooms = [Room(cachify, kind, f"tick-{n}", max_size=0) for n in range(3)]
    for n, room in enumerate(rooms):
        assert (await room.park_until(f"x{n}", 0)).status is RoomStatus.PARKED
    tick = sweep(cachify) if kind == "sync" else await sweep_async(cachify)
    assert sorted(ids(tuple(tick))) == ["x0", "x1", "x2"]
    part = sweep(cachify, max_rooms=2) if kind == "sync" else await sweep_async(cachify, max_rooms=2)
    assert part == []  # all three are handed over, within their lease


# -- settings and stores -----------------------------------------------------------------------------
def test_bad_settings_fail_before_any_io(backend: str) -> None:
    with pytest.raises(
        ValueError, match=r"waiting room: slot_ttl_ms must be a whole number of ms >= 1, got 0"
    ):
        RoomSettings(registry="r", max_size=1, slot_ttl_ms=0)
    with pytest.raises(ValueError, match=r"waiting room: max_size must be an int >= 0, got -1"):
        RoomSettings(registry="r", max_size=-1, slot_ttl_ms=1)
    with pytest.raises(ValueError, match=r"waiting room: registry must be a non-empty str"):
        RoomSettings(registry="", max_size=1, slot_ttl_ms=1)
    with pytest.raises(ValueError, match=r"handover_lease_ms must be a whole number of ms >= 1, got 1.5"):
        RoomSettings(registry="r", max_size=1, slot_ttl_ms=1, handover_lease_ms=1.5)  # type: ignore[arg-type]


async def test_a_pool_room_needs_slots_and_a_sweep_a_limit(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "bad", max_size=0)
    with pytest.raises(ValueError, match=r"room_acquire: RoomSettings.max_size must be >= 1"):
        await room.acquire("t", "e")
    with pytest.raises(ValueError, match=r"room_sweep: limit must be an int >= 1, got 0"):
        await room.sweep(limit=0)
    with pytest.raises(ValueError, match=r"delay_ms must be an int >= 0, got -1"):
        await room.park_until("e", -1)


def glob(text: str) -> str:
    return "".join(f"[{ch}]" if ch in "*?[]\\{}" else ch for ch in text)


def test_memory_and_redis_backends_support_waiting_rooms(cachify: Cachify) -> None:
    assert cachify.sync_backend.supports_waiting_room is True
    assert cachify.async_backend.supports_waiting_room is True


async def test_a_timed_park_keeps_the_pool_rooms_size(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "mixed", slot_ttl_ms=300)
    timed = Room(cachify, kind, "mixed", max_size=0)  # the same room, told of no slots
    assert (await room.acquire("dead", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t1", "w1")).status is RoomStatus.PARKED
    assert (await timed.park_until("later", 60_000)).status is RoomStatus.PARKED
    result, _ = await room.swept_until(lambda r: r.handed != ())  # the dead holder's slot frees
    assert result.handed == held_by(room, "w1")


# -- the per-process sweeper --------------------------------------------------------------------------
def test_the_sweeper_publishes_hand_overs_from_the_renewal_thread(cachify: Cachify) -> None:
    room = Room(cachify, "sync", "swept", max_size=0)
    published: list[Handover] = []
    arrived = threading.Event()

    def publish(handed: list[Handover]) -> None:
        published.extend(handed)
        arrived.set()

    sweeper = start_sweeper(cachify, publish, interval_s=0.05)
    try:
        asyncio.run(room.park_until("x", 100))
        assert arrived.wait(WAIT_S)
    finally:
        sweeper.stop()
    assert published == list(held_by(room, "x"))


async def test_the_async_sweeper_publishes_hand_overs_from_a_task(cachify: Cachify) -> None:
    room = Room(cachify, "async", "swept", max_size=0)
    published: list[Handover] = []
    arrived = asyncio.Event()

    async def publish(handed: list[Handover]) -> None:
        published.extend(handed)
        arrived.set()

    sweeper = start_async_sweeper(cachify, publish, interval_s=0.05)
    try:
        await room.park_until("x", 100)
        await asyncio.wait_for(arrived.wait(), WAIT_S)
    finally:
        sweeper.stop()
    assert published == list(held_by(room, "x"))


def test_a_release_with_nobody_parked_wakes_a_blocking_pool_waiter(make_cachify: Any) -> None:
    c = make_cachify(lock_poll_interval=5)  # a poll could never meet the bound below
    room = Room(c, "sync", "wake")
    assert asyncio.run(room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    got_at: list[float] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        with c.pool("wake", 1, timeout=10):
            got_at.append(time.monotonic())

    worker = threading.Thread(target=waiter, daemon=True)
    worker.start()
    assert waiting.wait(WAIT_S)
    time.sleep(0.3)  # the waiter found the pool full and sleeps on its 5 s poll
    released_at = time.monotonic()
    assert asyncio.run(room.release("t0")) == RoomRelease(True, ())
    worker.join(15)
    assert len(got_at) == 1
    assert got_at[0] - released_at < 2.0


def test_threads_sharing_a_room_run_every_entry_once_within_the_cap(cachify: Cachify) -> None:
    """4 threads, a pool of 2, a ``queue.Queue`` as the broker: each message is admitted through
    the room, run, released with hand-over; hand-overs are put back on the queue."""
    import queue

    total, max_size, threads = 80, 2, 4
    backend = cachify.sync_backend
    key = f"{cachify.prefix}threads-pool"
    settings = RoomSettings(registry=registry_key(cachify.prefix), max_size=max_size, slot_ttl_ms=10_000)
    broker: queue.Queue[tuple[int, str | None]] = queue.Queue()
    for n in range(total):
        broker.put((n, None))
    mutex = threading.Lock()
    state = {"inside": 0, "peak": 0}
    runs: list[int] = []
    parked: set[int] = set()
    handed: list[int] = []

    def publish(handovers: tuple[Handover, ...]) -> None:
        for h in handovers:
            n = int(h.payload.decode())
            with mutex:
                handed.append(n)
            broker.put((n, h.entry_id))

    def work(worker: int) -> None:
        deadline = time.monotonic() + WAIT_S * 4
        while True:
            with mutex:
                if len(runs) == total:
                    return
            assert time.monotonic() < deadline, f"worker {worker}: {len(runs)} of {total} ran"
            try:
                n, reservation = broker.get(timeout=0.05)
            except queue.Empty:
                publish(backend.room_sweep(key, settings.registry, 100).handed)
                continue
            token = new_token()
            admission = backend.room_acquire(key, token, new_token(), str(n).encode(), settings, reservation)
            publish(admission.handed)
            if admission.status is RoomStatus.PARKED:
                with mutex:
                    parked.add(n)
                continue
            assert admission.status in (RoomStatus.ACQUIRED, RoomStatus.CLAIMED), admission
            with mutex:
                state["inside"] += 1
                state["peak"] = max(state["peak"], state["inside"])
            time.sleep(0.002)
            with mutex:
                state["inside"] -= 1
                runs.append(n)
            released = backend.room_release(key, token, settings, reservation)
            assert released.released
            publish(released.handed)

    workers = [started(lambda i=i: work(i)) for i in range(threads)]
    for worker in workers:
        worker.finish(WAIT_S * 5)  # re-raises a worker's assertion
    assert sorted(runs) == list(range(total))
    assert 1 <= state["peak"] <= max_size
    assert parked, "the pool was never full"
    assert sorted(handed) == sorted(parked)  # every parked entry handed over once, only those
    assert backend.room_stats(key) == RoomStats(0, 0.0, 0, 0, 0)
    assert backend.pool_size(key) == 0


# -- claims: duplicates never run twice, a killed claim's redelivery is never lost ---------------------
async def test_a_killed_claimers_redelivery_runs_once_its_slot_runs_out(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "killed", slot_ttl_ms=300, handover_lease_ms=10_000)
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t1", "e1")).status is RoomStatus.PARKED
    assert ids((await room.release("t0")).handed) == ["e1"]
    assert (await room.acquire("victim", "x", reservation="e1")).status is RoomStatus.CLAIMED
    # the victim is killed mid-run; the broker redelivers its message at once
    assert (await room.acquire("t2", "copy", reservation="e1")).status is RoomStatus.DUPLICATE
    assert (await room.stats()).watching == 1
    assert (await room.acquire("t3", "copy-2", reservation="e1")).status is RoomStatus.DUPLICATE
    assert (await room.stats()).watching == 1  # one copy is enough
    killed_at = time.monotonic()
    result, at = await room.swept_until(lambda r: r.handed != ())
    assert result.handed == held_by(room, "copy")  # the copy runs, on a reserved slot
    assert at - killed_at >= 0.3 - CLOCK_SLACK_S - 0.05  # not before the victim's lease ran out
    assert (await room.acquire("t4", "y", reservation="copy")).status is RoomStatus.CLAIMED
    # the claim of e1 was handed to the copy: more copies of e1 are duplicates, kept nowhere
    assert (await room.acquire("t5", "copy-3", reservation="e1")).status is RoomStatus.DUPLICATE
    assert (await room.stats()).watching == 0


async def test_a_copy_arriving_after_a_dead_claimers_slot_ran_out_takes_the_claim_over(
    cachify: Cachify, kind: str
) -> None:
    room = Room(cachify, kind, "takeover", slot_ttl_ms=300)
    assert (await room.acquire("t0", "e0")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t1", "e1")).status is RoomStatus.PARKED
    assert ids((await room.release("t0")).handed) == ["e1"]
    assert (await room.acquire("victim", "x", reservation="e1")).status is RoomStatus.CLAIMED
    deadline = time.monotonic() + WAIT_S
    while await room.size() > 0:  # killed, and its lease runs out before any copy arrives
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert (await room.acquire("heir", "copy", reservation="e1")).status is RoomStatus.ACQUIRED
    assert (await room.acquire("t2", "copy-2", reservation="e1")).status is RoomStatus.DUPLICATE
    assert await room.release("heir", claimed="e1") == RoomRelease(True, ())
    assert await room.stats() == RoomStats(0, 0.0, 0, 0, 0)
    assert (await room.acquire("t3", "copy-3", reservation="e1")).status is RoomStatus.DUPLICATE
    assert await room.size() == 0


async def test_a_killed_timed_claimers_redelivery_comes_due_again(cachify: Cachify, kind: str) -> None:
    room = Room(cachify, kind, "timed-killed", max_size=0, slot_ttl_ms=300, handover_lease_ms=10_000)
    assert (await room.park_until("r", 0)).status is RoomStatus.PARKED
    assert ids((await room.swept_until(lambda r: r.handed != ()))[0].handed) == ["r"]
    assert await room.arrive("r", token="victim") is RoomStatus.CLAIMED
    assert await room.arrive("r", token="t2", copy="copy") is RoomStatus.DUPLICATE
    result, _ = await room.swept_until(lambda r: r.handed != ())
    assert result.handed == held_by(room, "copy")
    assert await room.arrive("copy", token="t3") is RoomStatus.CLAIMED
    assert await room.release("t3", claimed="copy") == RoomRelease(True, ())
    assert await room.sweep() == RoomSweep((), 0)
