"""Worker of ``test_waiting_room_processes``: top-level so a "spawn" child can import it.

A worker consumes "messages" from a Redis list (the broker), admits each through the pool's
waiting room, "runs" it, releases with hand-over, and publishes every hand-over by pushing its
payload back onto the list; it also sweeps the room every ``SWEEP_EVERY_S``. It records, under
``prefix``: ``inside`` / ``violations`` (concurrency above the pool's size), ``done`` (each
message number once per run), ``dups`` (arrivals recognised as duplicates), ``parks`` and
``hands`` (``<n>:<t0_ns>:<t1_ns>``: the monotonic interval around the call that parked or
handed over entry ``n``).
"""

from __future__ import annotations

import json
import time
import uuid

from cachify_core.backends.base import RoomSettings, RoomStatus
from cachify_core.rooms import registry_key

from .mp_workers import BARRIER_TIMEOUT_S, WORKER_BUDGET_S, connect, reporting

SWEEP_EVERY_S = 0.05
RUN_S = 0.004


def room_worker(url: str, prefix: str, worker_id: int, total: int, max_size: int, start) -> None:  # type: ignore[no-untyped-def]
    def body() -> None:
        c, raw = connect(url, prefix)
        backend = c.sync_backend
        key = f"{prefix}shared-pool"
        settings = RoomSettings(
            registry=registry_key(prefix), max_size=max_size, slot_ttl_ms=10_000, handover_lease_ms=3_000
        )

        def publish(handed, t0: int, t1: int) -> None:  # type: ignore[no-untyped-def]
            for h in handed:
                n = json.loads(h.payload)["n"]
                raw.rpush(prefix + "hands", f"{n}:{t0}:{t1}")
                raw.rpush(prefix + "queue", h.payload)

        start.wait(BARRIER_TIMEOUT_S)
        began = time.monotonic()
        next_sweep = began
        while int(raw.llen(prefix + "done")) < total:
            if time.monotonic() - began > WORKER_BUDGET_S:
                raise TimeoutError(f"worker {worker_id}: {raw.llen(prefix + 'done')} of {total} done")
            if time.monotonic() >= next_sweep:
                t0 = time.monotonic_ns()
                swept = backend.room_sweep(key, settings.registry, 100)
                publish(swept.handed, t0, time.monotonic_ns())
                next_sweep = time.monotonic() + SWEEP_EVERY_S
            popped = raw.blpop([prefix + "queue"], timeout=0.05)
            if popped is None:
                continue
            message = json.loads(popped[1])
            entry_id = uuid.uuid4().hex
            token = f"w{worker_id}:{entry_id}"
            republished = json.dumps({"n": message["n"], "reservation": entry_id}).encode()
            t0 = time.monotonic_ns()
            admission = backend.room_acquire(
                key, token, entry_id, republished, settings, message["reservation"]
            )
            t1 = time.monotonic_ns()
            publish(admission.handed, t0, t1)
            if admission.status is RoomStatus.PARKED:
                raw.rpush(prefix + "parks", f"{message['n']}:{t0}:{t1}")
                continue
            if admission.status is RoomStatus.DUPLICATE:
                raw.rpush(prefix + "dups", message["n"])
                continue
            assert admission.status in (RoomStatus.ACQUIRED, RoomStatus.CLAIMED), admission
            inside = raw.incr(prefix + "inside")
            if inside > max_size:
                raw.rpush(prefix + "violations", f"worker {worker_id}: {inside} inside")
            time.sleep(RUN_S)
            raw.decr(prefix + "inside")
            raw.rpush(prefix + "done", message["n"])
            t0 = time.monotonic_ns()
            released = backend.room_release(key, token, settings, message["reservation"])
            publish(released.handed, t0, time.monotonic_ns())
            assert released.released

    reporting(url, prefix, body)


def acks_late_worker(
    url: str, prefix: str, worker_id: int, total: int, max_size: int, slot_ttl_ms: int
) -> None:
    """A worker whose broker acknowledges late: a message moves to ``processing:<worker_id>``
    while it is handled and is removed from there only afterwards, so the test can redeliver
    what a killed worker held. Records ``runs`` (``<n>:<t0_ns>:<t1_ns>``, one per finished run),
    ``running:<worker_id>`` (the message number it runs right now) and the set ``done``."""

    def body() -> None:
        c, raw = connect(url, prefix)
        backend = c.sync_backend
        key = f"{prefix}shared-pool"
        settings = RoomSettings(
            registry=registry_key(prefix), max_size=max_size, slot_ttl_ms=slot_ttl_ms, handover_lease_ms=2_000
        )
        processing = f"{prefix}processing:{worker_id}"

        def publish(handed) -> None:  # type: ignore[no-untyped-def]
            for h in handed:
                raw.rpush(prefix + "queue", h.payload)

        began = time.monotonic()
        next_sweep = began
        while int(raw.scard(prefix + "done")) < total:
            if time.monotonic() - began > WORKER_BUDGET_S:
                raise TimeoutError(f"worker {worker_id}: {raw.scard(prefix + 'done')} of {total} done")
            if time.monotonic() >= next_sweep:
                publish(backend.room_sweep(key, settings.registry, 100).handed)
                next_sweep = time.monotonic() + SWEEP_EVERY_S
            raw_message = raw.blmove(prefix + "queue", processing, 0.05, "LEFT", "RIGHT")
            if raw_message is None:
                continue
            message = json.loads(raw_message)
            entry_id = uuid.uuid4().hex
            token = f"w{worker_id}:{entry_id}"
            republished = json.dumps({"n": message["n"], "reservation": entry_id}).encode()
            admission = backend.room_acquire(
                key, token, entry_id, republished, settings, message["reservation"]
            )
            publish(admission.handed)
            if admission.status in (RoomStatus.ACQUIRED, RoomStatus.CLAIMED):
                raw.set(f"{prefix}running:{worker_id}", message["n"])
                t0 = time.monotonic_ns()
                time.sleep(0.02)
                t1 = time.monotonic_ns()
                raw.rpush(prefix + "runs", f"{message['n']}:{t0}:{t1}")
                raw.sadd(prefix + "done", message["n"])
                raw.delete(f"{prefix}running:{worker_id}")
                publish(backend.room_release(key, token, settings, message["reservation"]).handed)
            else:
                assert admission.status in (RoomStatus.PARKED, RoomStatus.DUPLICATE), admission
            raw.lrem(processing, 1, raw_message)  # the late acknowledgement

    reporting(url, prefix, body)
