"""The delivery lifecycle's own CPU: one process, no framework, a real Redis.

    python benchmarks/lifecycle_cpu.py [--redis-url URL] [--rounds 5] [--quick]

What a worker pays cachify for one gated delivery, apart from everything a framework adds: a
:class:`cachify_core.tasks.Delivery` admitted and finished (``admit`` + ``succeeded``, and their
asyncio twins), timed by this thread's CPU clock (``time.thread_time_ns``), so waiting for the
server costs nothing and a loaded machine moves the numbers less than a wall clock would (it
still moves them: on a shared VM the same run has measured a bare round trip anywhere from 8 to
38 µs; compare rows within one run). Next to it, the same thread's CPU for one bare round trip
on cachify's wire (a ``PING``): what each of a gated task's round trips costs the client at the
very least.

Rows: no options (the lifecycle with nothing to do: 0 round trips), each option alone, and all
three together (``once_key`` + ``pool_key`` never full + ``cache_key`` misses: 1 round trip to
admit, 1 to finish). The claim at send is made before each delivery, as a sender would, and not
counted. Round trips per delivery are counted at the connection (``harness/requests.py``), on
the blocking path (the asyncio twins make the same calls). Rows alternate within each round;
each column is the median over the rounds.

Redis: ``--redis-url``, else ``REDIS_URL``, else a private ``redis-server`` on a free loopback
port (``tests/servers.py``), stopped at the end. Keys go under ``LCPU-<pid>-`` and are deleted
afterwards. The report (Markdown) goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.append(str(path))

import redis  # noqa: E402
from harness.frameworks import version  # noqa: E402
from harness.requests import counting_requests  # noqa: E402

from cachify_core import Cachify  # noqa: E402
from cachify_core.tasks import Delivery, TaskPolicies, TaskPolicy  # noqa: E402
from tests.servers import redis_url_or_private  # noqa: E402

#: Options per row (``{n}``: the message's argument, so every once key and cache key is new).
ROWS: dict[str, dict[str, object]] = {
    "no options": {},
    "once_key": {"once_key": "lc-once-{n}"},
    "pool_key (max 64, never full)": {"pool_key": "lc-pool", "pool_max_size": 64},
    "cache_key, miss": {"cache_key": "lc-cache-{n}", "cache_ttl": 300},
    "all three (misses)": {
        "once_key": "lc-all-{n}",
        "pool_key": "lc-all",
        "pool_max_size": 64,
        "cache_key": "lc-all-{n}",
        "cache_ttl": 300,
    },
}
#: What a parked task's message would be (a Celery message is about this size); never parked here.
PAYLOAD = b"p" * 400


def task_body(n: int) -> int:
    return n


@dataclass
class Row:
    name: str
    policy: TaskPolicy
    admission_us: list[float] = field(default_factory=list)
    finish_us: list[float] = field(default_factory=list)
    round_trips: float = 0.0


def delivery(policy: TaskPolicy, n: int) -> Delivery:
    task_id = uuid.uuid4().hex
    policy.claim(task_id, (n,), {})  # the sender's claim (a no-op without once_key)
    return Delivery(
        policy,
        task_id,
        (n,),
        {},
        0,
        f"bench:{task_id}",
        payload=lambda: PAYLOAD,
        publish=lambda handed: None,
    )


def blocking_round(row: Row, n: int, start: int) -> tuple[float, float]:
    admission = finish = 0
    for i in range(start, start + n):
        d = delivery(row.policy, i)
        t0 = time.thread_time_ns()
        d.admit()
        t1 = time.thread_time_ns()
        d.succeeded(i)
        finish += time.thread_time_ns() - t1
        admission += t1 - t0
    return admission / n / 1e3, finish / n / 1e3


async def asyncio_round(row: Row, n: int, start: int) -> tuple[float, float]:
    # This event loop's connection (the asyncio backend keeps one wire per loop), opened untimed.
    await row.policy.cachify.async_backend._wire("PING")  # type: ignore[attr-defined]
    admission = finish = 0
    for i in range(start, start + n):
        d = delivery(row.policy, i)
        t0 = time.thread_time_ns()
        await d.aadmit()
        t1 = time.thread_time_ns()
        await d.asucceeded(i)
        finish += time.thread_time_ns() - t1
        admission += t1 - t0
    return admission / n / 1e3, finish / n / 1e3


def round_trips(policy: TaskPolicy, n: int, start: int) -> float:
    """Requests one delivery's admission and finish send (the sender's claim not counted)."""
    pending = [delivery(policy, start + i) for i in range(n)]
    with counting_requests() as count:
        for d in pending:
            d.admit()
            d.succeeded(None)
    return count[0] / n


def bare_round_trip_us(c: Cachify, n: int, asyncio_: bool) -> float:
    if not asyncio_:
        wire = c.sync_backend._wire  # type: ignore[attr-defined]
        t0 = time.thread_time_ns()
        for _ in range(n):
            wire("PING")
        return (time.thread_time_ns() - t0) / n / 1e3

    async def pings() -> float:
        wire = c.async_backend._wire  # type: ignore[attr-defined]
        await wire("PING")
        t0 = time.thread_time_ns()
        for _ in range(n):
            await wire("PING")
        return (time.thread_time_ns() - t0) / n / 1e3

    return asyncio.run(pings())


def measure(c: Cachify, n: int, rounds: int, asyncio_: bool, start: int) -> tuple[list[Row], float]:
    """``start``: the first message argument: every delivery of a run has keys of its own."""
    rows = [
        Row(name, TaskPolicies(f"bench.{i}", task_body, options, lambda: c).declared)
        for i, (name, options) in enumerate(ROWS.items())
    ]
    run: Callable[[Row, int, int], tuple[float, float]] = (
        (lambda row, k, s: asyncio.run(asyncio_round(row, k, s))) if asyncio_ else blocking_round
    )
    for row in rows:  # warm up: connections, scripts cached on the server
        run(row, max(n // 10, 20), start)
        start += n
    bare: list[float] = []
    for r in range(rounds):
        for row in rows if r % 2 == 0 else reversed(rows):
            admission, finish = run(row, n, start)
            start += n
            row.admission_us.append(admission)
            row.finish_us.append(finish)
        bare.append(bare_round_trip_us(c, n, asyncio_))
    for row in rows:
        row.round_trips = round_trips(row.policy, min(n, 200), start)
        start += n
    return rows, statistics.median(bare)


def report(rows: list[Row], bare_us: float, title: str) -> list[str]:
    lines = [
        f"**{title}** (one bare round trip: {bare_us:.0f} µs of client CPU)",
        "",
        "| options | round trips | admission µs | finish µs | lifecycle µs | beyond its bare round trips µs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        admission, finish = statistics.median(row.admission_us), statistics.median(row.finish_us)
        total = admission + finish
        lines.append(
            f"| {row.name} | {row.round_trips:.1f} | {admission:.0f} | {finish:.0f} | {total:.0f} | "
            f"{total - row.round_trips * bare_us:.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer deliveries per round (~5 s)")
    args = parser.parse_args()
    n = 300 if args.quick else 2000
    with redis_url_or_private(args.redis_url) as url:
        c = Cachify(url=url, prefix=f"LCPU-{os.getpid()}-")
        server = redis.Redis.from_url(url)
        try:
            print(
                f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
                f"{platform.python_version()}, redis-py {version('redis')}, hiredis "
                f"{version('hiredis')}; Redis {server.info('server').get('redis_version', '?')} on "
                f"loopback. {n} deliveries per row and round, median of {args.rounds} rounds; thread "
                "CPU per delivery.\n"
            )
            for start, (asyncio_, title) in enumerate(
                ((False, "Blocking (Celery, Dramatiq)"), (True, "asyncio (Taskiq)"))
            ):
                rows, bare = measure(c, n, args.rounds, asyncio_, start * 10**9)
                print("\n".join(report(rows, bare, title)) + "\n")
        finally:
            keys = list(server.scan_iter(match=f"*LCPU-{os.getpid()}-*", count=1000))
            for i in range(0, len(keys), 500):
                server.delete(*keys[i : i + 500])
            server.close()


if __name__ == "__main__":
    main()
