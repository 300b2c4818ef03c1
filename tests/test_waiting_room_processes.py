"""The waiting room across real OS processes on a real Redis: a pool of 2 shared by workers
that publish hand-overs through a Redis list standing in for the broker (see
:mod:`tests.mp_workers_room`), with and without workers killed mid-run."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any

import redis

from cachify_core import init_cachify
from cachify_core.backends import RoomStats
from cachify_core.rooms import registry_key

from . import mp_workers_room
from .support import CTX, join_all, sigkill, start_all

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


def test_killed_workers_lose_nothing_and_duplicate_only_killed_runs(
    flushed_redis_url: str, raw: redis.Redis
) -> None:
    """3 workers, a pool of 2, a broker that acknowledges late; twice a worker is SIGKILLed in
    the middle of a run and what it held is redelivered at once (as RabbitMQ does when the
    channel closes), then a fresh worker joins. Every message runs; only killed runs run again;
    never more than 2 at a time; the room drains."""
    prefix = f"WK{uuid.uuid4().hex[:8]}-"
    total, max_size, slot_ttl_ms, kills = 60, 2, 800, 2
    for n in range(total):
        raw.rpush(prefix + "queue", json.dumps({"n": n, "reservation": None}))
    next_id = 0

    workers: dict[Any, int] = {}  # process -> its worker id (its processing list)

    def spawn() -> None:
        nonlocal next_id
        args = (flushed_redis_url, prefix, next_id, total, max_size, slot_ttl_ms)
        workers[start_all(mp_workers_room.acks_late_worker, [args])[0]] = next_id
        next_id += 1

    for _ in range(3):
        spawn()
    killed: list[tuple[int, int]] = []  # (message number, kill time ns)
    try:
        for k in range(kills):
            deadline = time.monotonic() + JOIN_TIMEOUT_S
            victim = None
            while victim is None:  # a worker mid-run, after some progress
                assert time.monotonic() < deadline, "no worker was seen mid-run"
                if int(raw.scard(prefix + "done")) >= (k + 1) * total // (kills + 2):
                    for proc, wid in workers.items():
                        running = raw.get(f"{prefix}running:{wid}")
                        if running is not None:
                            victim, n = (proc, wid), int(running)
                            break
                time.sleep(0.002)
            proc, wid = victim
            sigkill(proc)
            killed.append((n, time.monotonic_ns()))
            del workers[proc]
            raw.delete(f"{prefix}running:{wid}")
            while raw.lmove(f"{prefix}processing:{wid}", prefix + "queue", "RIGHT", "LEFT") is not None:
                pass  # the broker redelivers what the dead worker held, first in its queue
            spawn()
        join_all(list(workers), raw, prefix, JOIN_TIMEOUT_S)
    finally:
        for proc in workers:
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    runs = [tuple(int(x) for x in item.decode().split(":")) for item in raw.lrange(prefix + "runs", 0, -1)]
    counts = Counter(n for n, _, _ in runs)
    assert sorted(counts) == list(range(total)), "a message was lost"
    killed_numbers = {n for n, _ in killed}
    print(
        "DEBUG killed", killed_numbers, "dups", {n: k for n, k in counts.items() if k > 1}, "runs", len(runs)
    )
    assert {n for n, k in counts.items() if k > 1} <= killed_numbers  # a finished run never runs twice
    # concurrency of the finished runs (a killed run held its slot until it expired, so the
    # finished ones could only have had fewer)
    events = [(t0, 1) for _, t0, _ in runs] + [(t1, -1) for _, _, t1 in runs]
    inside = peak = 0
    for _, step in sorted(events):
        inside += step
        peak = max(peak, inside)
    assert peak <= max_size  # killed runs held their slot until it expired: finished ones had fewer
    c = init_cachify(url=flushed_redis_url, is_global=False, prefix=prefix)
    deadline = time.monotonic() + 5
    while c.pool("shared", max_size).size() or c.pool("shared", max_size).waiting() != RoomStats(
        0, 0.0, 0, 0, 0
    ):
        assert time.monotonic() < deadline, c.pool("shared", max_size).waiting()
        c.sync_backend.room_sweep(f"{prefix}shared-pool", registry_key(prefix), 100)
        time.sleep(0.05)
