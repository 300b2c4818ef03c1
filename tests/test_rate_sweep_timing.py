"""How soon after its time a rate-limited run's timed entry is published by a running sweeper.

The limiter counts a waiting run at its exact instant; the run starts when a sweeper publishes
it. A sweeper ticking only every second would publish an entry due in 250 ms up to ~1 s late,
and every entry that fell due since the previous tick in one batch (on real workers a 1 s
window of starts could then hold ``2 x count`` runs, one more than the limiter's own bound).
So a sweeper also wakes at the earliest due time the rooms report, and a park in this process
brings its next tick forward (``rooms.due_in``): each entry is published soon after its time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from cachify_core import Cachify, rooms
from cachify_core.backends.base import Handover
from cachify_core.tasks import Delivery, TaskPolicy, Verdict, parse_task_options

pytestmark = pytest.mark.timeout(30)


def geocode(tenant: str) -> str:
    return tenant


def test_a_timed_entry_is_published_soon_after_its_time(cachify: Cachify) -> None:
    if not cachify.sync_backend.supports_waiting_room:
        pytest.skip("store without waiting rooms")
    p = TaskPolicy(
        parse_task_options("tasks.geocode", geocode, {"rate_key": "geo-{tenant}", "rate": "4/s"}), cachify
    )
    published: list[float] = []
    got = threading.Event()

    def publish(handed: Sequence[Handover]) -> None:
        published.extend(time.monotonic() for _ in handed)
        got.set()

    def delivery(task_id: str) -> Delivery:
        message: dict[str, Any] = {"id": task_id}
        return Delivery(
            p, task_id, ("acme",), {}, payload=lambda: json.dumps(message).encode(), publish=publish
        )

    for i in range(4):  # the burst
        d = delivery(f"t{i}")
        assert d.admit().verdict is Verdict.RUN
        d.succeeded(i)
    sweeper = rooms.start_sweeper(cachify, publish)
    try:
        parked_at = time.monotonic()
        assert delivery("t4").admit().verdict is Verdict.PARKED  # due ~250 ms from now
        assert got.wait(5.0), "never published"
        late_s = published[0] - parked_at - 0.25
    finally:
        sweeper.stop()
    assert late_s < 0.15, f"published {late_s:.3f}s after its time"
