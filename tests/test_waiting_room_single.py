"""Waiting-room cases that concern one backend only (each says which), apart from the
backend table of test_waiting_room.py."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

from cachify_core import Cachify, leases
from cachify_core.backends import MemoryStore
from cachify_core.backends.base import (
    RoomRelease,
    RoomSettings,
    RoomStats,
    RoomStatus,
    RoomSweep,
)
from cachify_core.errors import CachifyUnsupportedError
from cachify_core.rooms import registry_key

from .support import WAIT_S
from .test_waiting_room import Room, glob, held_by, ids


@pytest.mark.parametrize("backend", ["redis"])  # key lifetimes are a Redis matter
def test_room_keys_never_expire_while_entries_wait(cachify: Cachify, backend: str) -> None:
    room = Room(cachify, "sync", "keep", slot_ttl_ms=300)
    client: Any = cachify.sync_backend.client  # type: ignore[attr-defined]
    asyncio.run(room.acquire("t0", "e0"))
    asyncio.run(room.acquire("t1", "e1"))
    tag = "{" + room.key + "}"
    assert {k: client.pttl(tag + k) for k in (":room", ":parked", ":conf")} == {
        ":room": -1,
        ":parked": -1,
        ":conf": -1,
    }
    assert 0 < client.pttl(tag) <= 300  # the slots keep their own lifetime
    # the holder dies and its lease runs out; the sweep hands e1 over, whose publish is lost:
    # its reservation runs out too, and nothing of the room expires meanwhile
    deadline = time.monotonic() + WAIT_S
    while client.exists(tag):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert asyncio.run(room.sweep()).handed == held_by(room, "e1")
    deadline = time.monotonic() + WAIT_S
    while client.exists(tag):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert {k: client.pttl(tag + k) for k in (":handed", ":parked", ":conf")} == {
        ":handed": -1,
        ":parked": -1,
        ":conf": -1,
    }
    # the entry is dropped (its delivery will not run): what is left goes, the registry too
    assert asyncio.run(room._call("room_cancel", room.key, "e1", room.settings)).released
    leftover = [k for k in client.keys(glob(tag) + "*") if not k.endswith(b":started")]
    assert leftover == []
    assert asyncio.run(room.sweep()) == RoomSweep((), 0)  # on Cluster the sweep unlists it
    assert client.exists("{" + room.registry + "}") == 0


def test_memory_rooms_leave_nothing_behind() -> None:
    store = MemoryStore()
    settings = RoomSettings(registry="reg", max_size=1, slot_ttl_ms=5_000, started_ttl_ms=1)
    assert store.room_acquire("k", "t0", "e0", b"p", settings).status is RoomStatus.ACQUIRED
    assert store.room_acquire("k", "t1", "e1", b"p", settings).status is RoomStatus.PARKED
    assert ids(store.room_release("k", "t0", settings).handed) == ["e1"]
    assert store.room_acquire("k", "run", "x", b"p", settings, "e1").status is RoomStatus.CLAIMED
    assert store.room_release("k", "run", settings, claimed="e1") == RoomRelease(True, ())
    time.sleep(0.002)  # the started mark (1 ms) runs out
    store._sweep(time.monotonic())
    assert (store._rooms, store._pools, store._registries) == ({}, {}, {})


def test_custom_client_backends_have_no_waiting_room() -> None:
    from cachify_core import init_cachify

    from .test_init import DictClient

    c = init_cachify(sync_client=DictClient(), is_global=False, prefix=f"C{uuid.uuid4().hex[:6]}-")
    settings = RoomSettings(registry=registry_key(c.prefix), max_size=1, slot_ttl_ms=1_000)
    assert c.sync_backend.supports_waiting_room is False
    assert c.async_backend.supports_waiting_room is False
    with pytest.raises(
        CachifyUnsupportedError, match=r"room_acquire on custom DictClient: .* no waiting rooms"
    ):
        c.sync_backend.room_acquire("k", "t", "e", b"p", settings)
    with pytest.raises(CachifyUnsupportedError, match=r"room_release on custom DictClient"):
        asyncio.run(c.async_backend.room_release("k", "t", settings))
    assert c.pool("k", 1).waiting() == RoomStats(0, 0.0, 0, 0)
    assert c.sync_backend.rooms(settings.registry) == ()


def test_a_failing_periodic_job_is_logged_and_runs_again(warnings_log: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    third = threading.Event()

    def job() -> None:
        runs.append(1)
        if len(runs) >= 3:
            third.set()
        raise RuntimeError("broker down")

    periodic = leases.renewer.every("flaky", 0.02, job)
    try:
        assert third.wait(WAIT_S)
    finally:
        periodic.stop()
    assert any("periodic job flaky failed: broker down" in r.getMessage() for r in warnings_log.records)
    with pytest.raises(ValueError, match=r"periodic job 'bad': interval_s must be a positive number, got 0"):
        leases.renewer.every("bad", 0, job)
