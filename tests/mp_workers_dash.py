"""Worker of ``test_dashboard``: top-level so a "spawn" child can import it.

A worker consumes "messages" from a Redis list (the broker, ``<prefix>queue``), admits each
through pool ``<prefix>dash-pool``'s waiting room, and *holds* the slot it got (a long task)
until one of:

* ``<prefix>let-go:<worker_id>`` is set: it releases with hand-over (``room_release``) and
  publishes what was handed over, as a finishing task does;
* its slot is gone (released from outside, e.g. by the dashboard): it records ``lost`` and
  takes the next message;
* ``<prefix>stop`` is set, or its budget runs out: it releases and exits.

Whether holding or not, it sweeps the room every ``SWEEP_EVERY_S`` and publishes what the sweep
hands over (a slot freed by a plain ``pool_release`` reaches the longest-waiting entry so).
Records under ``prefix``: ``holding:<worker_id>`` (its slot token while it holds one),
``parks`` / ``claims`` (message numbers), ``lost`` (worker ids).
"""

from __future__ import annotations

import json
import time
import uuid

from cachify_core.backends.base import RoomSettings, RoomStatus
from cachify_core.ops.store import tag_key
from cachify_core.rooms import registry_key

from .mp_workers import connect, reporting

SWEEP_EVERY_S = 0.1
#: No worker lives longer than this, whatever the test does.
BUDGET_S = 90.0


def holding_worker(url: str, prefix: str, worker_id: int, max_size: int) -> None:
    def body() -> None:
        c, raw = connect(url, prefix)
        backend = c.sync_backend
        key = f"{prefix}dash-pool"
        slots = tag_key(key)
        settings = RoomSettings(
            registry=registry_key(prefix), max_size=max_size, slot_ttl_ms=120_000, handover_lease_ms=5_000
        )
        let_go, holding = f"{prefix}let-go:{worker_id}", f"{prefix}holding:{worker_id}"
        began = time.monotonic()
        next_sweep = began
        held: tuple[str, str | None] | None = None  # (token, reservation) of the slot held

        def publish(handed) -> None:  # type: ignore[no-untyped-def]
            for h in handed:
                raw.rpush(prefix + "queue", h.payload)

        def give_back() -> None:
            nonlocal held
            assert held is not None
            token, reservation = held
            publish(backend.room_release(key, token, settings, reservation).handed)
            raw.delete(holding)
            held = None

        while True:
            if raw.exists(prefix + "stop") or time.monotonic() - began > BUDGET_S:
                if held is not None:
                    give_back()
                return
            if time.monotonic() >= next_sweep:
                publish(backend.room_sweep(key, settings.registry, 100).handed)
                next_sweep = time.monotonic() + SWEEP_EVERY_S
            if held is not None:
                if raw.delete(let_go):
                    give_back()
                elif raw.zscore(slots, held[0]) is None:
                    raw.rpush(prefix + "lost", worker_id)
                    raw.delete(holding)
                    held = None
                else:
                    time.sleep(0.02)
                continue
            popped = raw.blpop([prefix + "queue"], timeout=0.05)
            if popped is None:
                continue
            message = json.loads(popped[1])
            entry_id = uuid.uuid4().hex
            token = f"w{worker_id}:{entry_id}"
            republished = json.dumps({"n": message["n"], "reservation": entry_id}).encode()
            admission = backend.room_acquire(
                key, token, entry_id, republished, settings, message["reservation"]
            )
            publish(admission.handed)
            if admission.status is RoomStatus.PARKED:
                raw.rpush(prefix + "parks", message["n"])
            elif admission.status in (RoomStatus.ACQUIRED, RoomStatus.CLAIMED):
                held = (token, message["reservation"])
                raw.set(holding, token)
                raw.rpush(prefix + "claims", message["n"])

    reporting(url, prefix, body)
