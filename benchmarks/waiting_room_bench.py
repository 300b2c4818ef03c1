"""The waiting room's cost on Redis: bytes per parked entry, round trips and ops/s per primitive.

    python benchmarks/waiting_room_bench.py [--redis-url URL] [--quick] [--entries 10000]

Three parts, all on one Redis (``--redis-url``, else ``REDIS_URL``, else a private server):

1. **Memory**: ``N`` entries parked in one room, with a real Celery message (headers,
   properties and body, as the integration would store it) and a real Dramatiq message as the
   payload; ``MEMORY USAGE ... SAMPLES 0`` of every key of the room, and the server's
   ``used_memory`` before and after, divided by ``N``.
2. **Round trips**: requests each primitive sends, counted on the backend's connection.
3. **Speed** (median and best of the alternating rounds: on a shared machine the best round
   is the steadier figure): ops/s of ``room_acquire`` + ``room_release`` against ``pool_acquire`` +
   ``pool_release`` (a free pool: the common path), and of the hand-over cycle on a full pool
   of 1 (park a newcomer, release with hand-over, claim the reservation), in alternating rounds;
   medians of the rounds. Also one idle sweep tick (the registry read alone).

Keys live under ``WRB-<pid>-`` and are deleted afterwards; the server is never flushed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import redis  # noqa: E402

from cachify_core import init_cachify  # noqa: E402
from cachify_core.backends.base import RoomSettings, RoomStatus  # noqa: E402
from cachify_core.rooms import registry_key, sweep  # noqa: E402
from cachify_core.tokens import new_token  # noqa: E402

PREFIX = f"WRB-{os.getpid()}-"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def celery_payload() -> bytes:
    """A Celery protocol-2 message as an integration would park it (headers, properties, body)."""
    try:
        from celery import Celery
        from kombu.utils.json import dumps
    except ImportError:
        return b"c" * 800
    app = Celery("bench", broker="memory://")
    m = app.amqp.as_task_v2(
        str(uuid.uuid4()),
        "billing.tasks.charge_card",
        args=(12345, "cus_9s8d7f6g5h"),
        kwargs={"amount_cents": 1999, "currency": "usd"},
    )
    message = {"headers": m.headers, "properties": m.properties, "body": m.body, "routing_key": "celery"}
    return str(dumps(message)).encode()


def dramatiq_payload() -> bytes:
    try:
        from dramatiq import Message
    except ImportError:
        return b"d" * 290
    return Message(
        queue_name="default",
        actor_name="charge_card",
        args=(12345, "cus_9s8d7f6g5h"),
        kwargs={"amount_cents": 1999, "currency": "usd"},
        options={"redis_message_id": str(uuid.uuid4())},
    ).encode()


def room_keys(client: redis.Redis, key: str) -> list[bytes]:
    tag = "{" + key + "}"
    return list(client.scan_iter(match=tag.replace("{", "[{]").replace("}", "[}]") + "*", count=1000))


def memory_rows(url: str, entries: int) -> list[str]:
    client = redis.Redis.from_url(url)
    c = init_cachify(url=url, is_global=False, prefix=PREFIX)
    backend = c.sync_backend
    rows = []
    for label, payload in (("Celery", celery_payload()), ("Dramatiq", dramatiq_payload())):
        key = f"{PREFIX}mem-{label}-pool"
        settings = RoomSettings(registry=registry_key(PREFIX), max_size=1, slot_ttl_ms=600_000)
        assert backend.room_acquire(key, "holder", "e", payload, settings).status is RoomStatus.ACQUIRED
        before = int(client.info("memory")["used_memory"])
        for _ in range(entries):
            status = backend.room_acquire(key, new_token(), new_token(), payload, settings).status
            assert status is RoomStatus.PARKED
        after = int(client.info("memory")["used_memory"])
        usage = {k.decode(): int(client.memory_usage(k, samples=0) or 0) for k in room_keys(client, key)}
        per_entry = sum(v for k, v in usage.items() if k.endswith((":room", ":parked"))) / entries
        rows.append(
            f"| {label} | {len(payload)} | {entries} | {per_entry:.0f} | {(after - before) / entries:.0f} | "
            + ", ".join(f"`{k.split('}')[-1] or '(slots)'}` {v:,}" for k, v in sorted(usage.items()))
            + " |"
        )
        client.delete(*room_keys(client, key))
    client.delete("{" + registry_key(PREFIX) + "}")
    return rows


class Counting:
    """Wraps a backend's wire: counts the requests sent (one request = one round trip)."""

    def __init__(self, wire: Any) -> None:
        self.wire = wire
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.wire(*args)


def round_trip_rows(url: str) -> list[str]:
    """Requests per primitive on a warm connection (a first pass loads the scripts: the one
    NOSCRIPT fallback per script and server is not counted)."""
    c = init_cachify(url=url, is_global=False, prefix=PREFIX)
    backend: Any = c.sync_backend
    counter = Counting(backend._wire)
    backend._wire = counter
    settings = RoomSettings(registry=registry_key(PREFIX), max_size=1, slot_ttl_ms=60_000)

    def script(key: str) -> list[tuple[str, Callable[[], Any]]]:
        return [
            ("room_acquire (slot free)", lambda: backend.room_acquire(key, "t0", "e0", b"p", settings)),
            ("room_acquire (parks)", lambda: backend.room_acquire(key, "t1", "e1", b"p", settings)),
            ("room_release (hands over)", lambda: backend.room_release(key, "t0", settings)),
            ("room_acquire (claims)", lambda: backend.room_acquire(key, "t2", "e2", b"p", settings, "e1")),
            ("room_release (ends a claim)", lambda: backend.room_release(key, "t2", settings, "e1")),
            ("room_park_until", lambda: backend.room_park_until(key, "x", b"p", 0, settings)),
            ("room_sweep", lambda: backend.room_sweep(key, settings.registry, 100)),
            ("room_arrive", lambda: backend.room_arrive(key, "t3", "c", b"p", settings, "x")),
            ("room_stats", lambda: backend.room_stats(key)),
            ("rooms", lambda: backend.rooms(settings.registry)),
            ("pool_acquire", lambda: backend.pool_acquire(key + "2", "t", 1, 1000, False)),
            ("pool_release", lambda: backend.pool_release(key + "2", "t")),
        ]

    for _name, call in script(f"{PREFIX}rt-warm-pool"):
        call()
    rows = []
    for name, call in script(f"{PREFIX}rt-pool"):
        counter.calls = 0
        call()
        rows.append(f"| {name} | {counter.calls} |")
    client = redis.Redis.from_url(url)
    for key in (f"{PREFIX}rt-warm-pool", f"{PREFIX}rt-pool"):
        keys = room_keys(client, key)
        if keys:
            client.delete(*keys)
    return rows


def rounds(
    ops: dict[str, Callable[[int], None]], rounds_n: int, per_round: int
) -> dict[str, tuple[float, float]]:
    """Alternate the ops round by round; (median, best) seconds per iteration of each."""
    times: dict[str, list[float]] = {name: [] for name in ops}
    for op in ops.values():  # warm-up
        op(max(10, per_round // 10))
    for r in range(rounds_n):
        order = list(ops) if r % 2 == 0 else list(reversed(ops))
        for name in order:
            start = time.perf_counter()
            ops[name](per_round)
            times[name].append((time.perf_counter() - start) / per_round)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def speed_rows(url: str, quick: bool) -> list[str]:
    c = init_cachify(url=url, is_global=False, prefix=PREFIX)
    backend = c.sync_backend
    settings = RoomSettings(registry=registry_key(PREFIX), max_size=10, slot_ttl_ms=60_000)
    full = RoomSettings(registry=registry_key(PREFIX), max_size=1, slot_ttl_ms=60_000)
    payload = celery_payload()

    def plain(n: int) -> None:
        key = f"{PREFIX}plain-pool"
        for _ in range(n):
            token = new_token()
            backend.pool_acquire(key, token, 10, 60_000, False)
            backend.pool_release(key, token)

    def room(n: int) -> None:
        key = f"{PREFIX}room-pool"
        for _ in range(n):
            token = new_token()
            backend.room_acquire(key, token, new_token(), payload, settings)
            backend.room_release(key, token, settings)

    state: dict[str, str | None] = {"holder": new_token(), "claimed": None}
    first = backend.room_acquire(f"{PREFIX}cycle-pool", str(state["holder"]), "e", payload, full)
    assert first.status is RoomStatus.ACQUIRED

    def cycle(n: int) -> None:
        key = f"{PREFIX}cycle-pool"
        for _ in range(n):
            entry = new_token()
            backend.room_acquire(key, new_token(), entry, payload, full)  # parks
            backend.room_release(key, str(state["holder"]), full, state["claimed"])  # hands `entry` over
            holder = state["holder"] = new_token()
            backend.room_acquire(key, holder, new_token(), payload, full, entry)  # claims
            state["claimed"] = entry

    def idle_tick(n: int) -> None:
        for _ in range(n):
            sweep(c)

    per_round = 200 if quick else 1000
    medians = rounds(
        {"plain": plain, "room": room, "cycle": cycle, "idle": idle_tick}, 5 if quick else 11, per_round
    )
    client = redis.Redis.from_url(url)
    for key in (f"{PREFIX}plain-pool", f"{PREFIX}room-pool", f"{PREFIX}cycle-pool"):
        keys = room_keys(client, key)
        if keys:
            client.delete(*keys)
    client.delete("{" + registry_key(PREFIX) + "}")
    names = {
        "plain": ("pool_acquire + pool_release (free pool)", 2),
        "room": ("room_acquire + room_release (free pool)", 2),
        "cycle": ("hand-over cycle: park + release/hand over + claim (full pool of 1)", 3),
        "idle": ("idle sweep tick (registry read, no room listed)", 1),
    }
    rows = []
    for key, (label, rts) in names.items():
        median, best = medians[key]
        versus = (
            f"{medians['plain'][0] / median:.2f}x / {medians['plain'][1] / best:.2f}x"
            if key == "room"
            else "—"
        )
        rows.append(
            f"| {label} | {rts} | {median * 1e6:.0f} | {best * 1e6:.0f} | {1 / median:,.0f} | {versus} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--entries", type=int, default=None, help="entries parked for the memory rows")
    options = parser.parse_args()
    from tests.servers import redis_url_or_private

    entries = options.entries or (2_000 if options.quick else 10_000)
    with redis_url_or_private(options.redis_url) as url:
        info = redis.Redis.from_url(url).info("server")
        log(f"redis {info['redis_version']} at {url}")
        print(f"Redis {info['redis_version']}, Python {sys.version.split()[0]}\n")
        print("### Bytes per parked entry\n")
        print(
            "| payload | payload bytes | entries | bytes/entry (MEMORY USAGE of :room + :parked) | bytes/entry (used_memory delta) | room keys (MEMORY USAGE) |"
        )
        print("|---|---|---|---|---|---|")
        for row in memory_rows(url, entries):
            print(row)
        print("\n### Round trips per primitive (single server)\n")
        print("| operation | round trips |\n|---|---|")
        for row in round_trip_rows(url):
            print(row)
        print("\n### Speed (alternating rounds)\n")
        print(
            "| operation | round trips | µs/cycle (median) | µs/cycle (best round) | cycles/s (median) "
            "| plain pool ÷ this (median / best) |\n|---|---|---|---|---|---|"
        )
        for row in speed_rows(url, options.quick):
            print(row)


if __name__ == "__main__":
    main()
