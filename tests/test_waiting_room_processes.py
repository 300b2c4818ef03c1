"""The waiting room across real OS processes on a real Redis: a pool of 2 shared by 4 workers
that publish hand-overs through a Redis list standing in for the broker (see
:mod:`tests.mp_workers_room`)."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import redis

from cachify_core import init_cachify
from cachify_core.backends import RoomStats
from cachify_core.rooms import registry_key

from . import mp_workers_room
from .support import CTX, join_all, start_all

JOIN_TIMEOUT_S = 30.0


def _intervals(raw: redis.Redis, name: str) -> dict[int, tuple[int, int]]:
    """entry number -> (t0, t1) of its first event in list ``name``."""
    first: dict[int, tuple[int, int]] = {}
    for item in raw.lrange(name, 0, -1):
        n, t0, t1 = (int(x) for x in item.decode().split(":"))
        first.setdefault(n, (t0, t1))
    return first


def test_every_entry_runs_once_at_most_two_at_a_time_in_fifo_order(
    flushed_redis_url: str, raw: redis.Redis
) -> None:
    prefix = f"WR{uuid.uuid4().hex[:8]}-"
    workers, total, max_size = 4, 120, 2
    for n in range(total):
        raw.rpush(prefix + "queue", json.dumps({"n": n, "reservation": None}))
    barrier = CTX.Barrier(workers)
    procs = start_all(
        mp_workers_room.room_worker,
        [(flushed_redis_url, prefix, i, total, max_size, barrier) for i in range(workers)],
    )
    join_all(procs, raw, prefix, JOIN_TIMEOUT_S)

    assert raw.lrange(prefix + "violations", 0, -1) == []
    runs = Counter(int(x) for x in raw.lrange(prefix + "done", 0, -1))
    assert sorted(runs) == list(range(total))
    assert set(runs.values()) == {1}, {n: k for n, k in runs.items() if k != 1}
    parks, hands = _intervals(raw, prefix + "parks"), _intervals(raw, prefix + "hands")
    assert len(parks) >= total // 4, f"only {len(parks)} parks: the pool was hardly ever full"
    assert set(hands) == set(parks)  # every parked entry was handed over, and only those
    # FIFO: an entry parked strictly before another is never handed over strictly after it
    order = sorted(parks, key=lambda n: parks[n][1])
    inversions = [
        (a, b)
        for i, a in enumerate(order)
        for b in order[i + 1 :]
        if parks[a][1] < parks[b][0] and hands[b][1] < hands[a][0]
    ]
    assert inversions == []
    c = init_cachify(url=flushed_redis_url, is_global=False, prefix=prefix)
    assert c.pool("shared", max_size).waiting() == RoomStats(0, 0.0, 0, 0, 0)
    assert c.pool("shared", max_size).size() == 0
    assert c.sync_backend.rooms(registry_key(prefix)) == ()
