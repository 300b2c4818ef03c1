"""Dramatiq with cachify's task options: messages/s with and without each option, and the
``pool_*`` cap next to Dramatiq's own ``ConcurrentRateLimiter`` on the same Redis.

    python benchmarks/dramatiq_bench.py [--redis-url URL] [--quick] [--threads 8]

Redis: ``--redis-url``, else ``REDIS_URL``, else a private ``redis-server`` on a free loopback
port (found and run by ``tests/servers.py``) and stopped at the end. On a server you pass, the
run writes only keys under this run's own broker namespace, cachify prefix and limiter key
(all with the pid in them) and deletes them afterwards; it never flushes.

Everything runs in this process: one ``RedisBroker`` and an in-process ``dramatiq.Worker``
(``--threads`` worker threads), as in a single worker process. The report (Markdown) goes to
stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # for tests/servers.py; the cachify measured is the one imported

import dramatiq  # noqa: E402
import redis  # noqa: E402
from dramatiq.brokers.redis import RedisBroker  # noqa: E402
from dramatiq.middleware import Middleware  # noqa: E402
from dramatiq.rate_limits import ConcurrentRateLimiter  # noqa: E402
from dramatiq.rate_limits.backends import RedisBackend as RateLimiterBackend  # noqa: E402

from benchmarks.harness.cpu import CpuMeter, cpu_table, medians, per_task_us, redis_pid  # noqa: E402
from cachify_core import init_cachify  # noqa: E402
from cachify_dramatiq import REQUEUES_OPTION, CachifyMiddleware  # noqa: E402

RUN = f"bench-{os.getpid()}"
#: Longest any batch may take before the run gives up on it.
BATCH_TIMEOUT_S = 300.0
#: Workers poll idle queues this often (ms); dramatiq's default of 1000 would dominate requeues.
WORKER_TIMEOUT_MS = 100
#: Both caps back off over the same range: cachify's pool_backoff, and Retries' min/max_backoff.
BACKOFF_S = (0.01, 0.2)
#: The cap in the comparison, and each capped task's work.
CAP, WORK_S = 3, 0.01
#: Retries' default budget, for the rate-limited actor.
MAX_RETRIES = 20


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Tally(Middleware):
    """Counts finished messages (succeeded, or dead-lettered) so a batch knows when it is over,
    the retries and requeues they carried, and the peak of bodies running at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset(0)

    def reset(self, expected: int) -> None:
        with self._lock:
            self.expected, self.done, self.dead = expected, 0, 0
            self.first_start: float | None = None
            self.last_end = 0.0
            self.retries = self.requeues = self.active = self.peak = 0
            self.finished = threading.Event()
            if expected == 0:
                self.finished.set()

    def enter(self) -> None:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def leave(self) -> None:
        with self._lock:
            self.active -= 1

    def before_process_message(self, broker: Any, message: Any) -> None:
        if self.first_start is None:
            self.first_start = time.perf_counter()

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is not None:  # a retry, or a failure that after_nack counts
            return
        with self._lock:  # a run, or a cache hit (which runs nothing)
            self.retries += message.options.get("retries", 0)
            self.requeues += message.options.get(REQUEUES_OPTION, 0)
            self._count("done")

    def after_nack(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._count("dead")

    def _count(self, which: str) -> None:
        setattr(self, which, getattr(self, which) + 1)
        self.last_end = time.perf_counter()
        if self.done + self.dead >= self.expected:
            self.finished.set()


@dataclass
class App:
    broker: RedisBroker
    tally: Tally
    threads: int
    meter: CpuMeter
    actors: dict[str, dramatiq.Actor[Any, Any]] = field(default_factory=dict)


def build_app(url: str, threads: int) -> App:
    """The broker and its actors, one per row."""
    broker = RedisBroker(url=url, namespace=f"cfy-{RUN}")  # type: ignore[no-untyped-call]
    cachify = init_cachify(url=url, prefix=f"CFY-{RUN}-", is_global=False)
    tally = Tally()
    broker.add_middleware(CachifyMiddleware(cachify=cachify))
    broker.add_middleware(tally)
    app = App(broker, tally, threads, CpuMeter(redis=redis_pid(url)))
    limiter = ConcurrentRateLimiter(RateLimiterBackend(url=url), f"limiter-{RUN}", limit=CAP)  # type: ignore[no-untyped-call]

    def declare(name: str, fn: Callable[..., None], **options: Any) -> None:
        app.actors[name] = dramatiq.actor(actor_name=name, broker=broker, max_retries=0, **options)(fn)

    def noop(i: int) -> None:
        tally.enter()
        tally.leave()

    def capped(i: int) -> None:
        tally.enter()
        time.sleep(WORK_S)
        tally.leave()

    def rate_limited(i: int) -> None:
        with limiter.acquire():  # RateLimitExceeded goes through Retries
            tally.enter()
            time.sleep(WORK_S)
            tally.leave()

    store = redis.Redis.from_url(url)  # the floor row's client (thread-safe: a connection pool)

    def pinging(i: int) -> None:
        tally.enter()
        store.ping()
        store.ping()
        tally.leave()

    declare("plain", noop)
    declare("floor", pinging)
    declare("once_queued", noop, once_key="b-{i}")
    declare("once_running", noop, once_key="b-{i}", once_mode="running")
    declare("pool_never_full", noop, pool_key="big", pool_max_size=10_000)
    declare("cache_miss", noop, cache_key="miss-{i}")
    declare("cache_hit", noop, cache_key="hit")
    declare("all_three", noop, once_key="a-{i}", pool_key="a", pool_max_size=10_000, cache_key="a-{i}")
    declare("cachify_pool", capped, pool_key="cap", pool_max_size=CAP, pool_backoff=BACKOFF_S)
    app.actors["dramatiq_limiter"] = dramatiq.actor(
        actor_name="dramatiq_limiter",
        broker=broker,
        max_retries=MAX_RETRIES,
        min_backoff=int(BACKOFF_S[0] * 1000),
        max_backoff=int(BACKOFF_S[1] * 1000),
    )(rate_limited)
    return app


@dataclass(frozen=True)
class Batch:
    send_s: float
    run_s: float
    messages: int
    done: int
    dead: int
    retries: int
    requeues: int
    peak: int
    cpu_us: dict[str, float] = field(default_factory=dict)  #: µs of CPU per message, by process


_batch_numbers = itertools.count()


def run_batch(app: App, actor: str, messages: int) -> Batch:
    """Send ``messages`` (timed), then let a fresh worker drain them (timed from the first
    message it picks up to the last it finishes, so starting the worker is not counted). CPU
    is read from before the worker starts to after the last message ended (its start is in it:
    a few ms, a few µs per message of a full batch)."""
    app.tally.reset(messages)
    send = app.actors[actor].send
    first = next(_batch_numbers) * 1_000_000  # fresh arguments: a cache miss row stays all misses
    start = time.perf_counter()
    for i in range(first, first + messages):
        send(i)
    sent = time.perf_counter()
    # A worker adds a middleware of its own to the broker and leaves it there when stopped;
    # taken out again, so batches do not pile them up (a paused worker would restart its
    # consumers after a 3 s delay on resume, so it is no substitute).
    before = list(app.broker.middleware)
    worker = dramatiq.Worker(app.broker, worker_threads=app.threads, worker_timeout=WORKER_TIMEOUT_MS)
    cpu_before = app.meter.read()
    worker.start()
    t = app.tally
    try:
        if not t.finished.wait(BATCH_TIMEOUT_S):
            raise RuntimeError(f"{actor}: {t.done} of {messages} done after {BATCH_TIMEOUT_S}s")
        cpu = per_task_us(cpu_before, app.meter.read(), messages)
    finally:
        worker.stop()
        app.broker.middleware[:] = [m for m in app.broker.middleware if any(m is b for b in before)]
    run_s = t.last_end - (t.first_start or t.last_end)
    return Batch(sent - start, run_s, messages, t.done, t.dead, t.retries, t.requeues, t.peak, cpu)


#: (row label, actor); the first row is the baseline the others are compared with.
OVERHEAD_ROWS = [
    ("no options", "plain"),
    ("once_key (queued)", "once_queued"),
    ("once_key, once_mode='running'", "once_running"),
    ("pool_key (never full)", "pool_never_full"),
    ("cache_key, every message a miss", "cache_miss"),
    ("cache_key, every message a hit", "cache_hit"),
    ("once_key + pool_key + cache_key (misses)", "all_three"),
    # no option, but a gated task's two round trips in the worker, as bare PINGs: its floor
    ("floor: no options, 2 bare PINGs in the actor", "floor"),
]


def overhead_table(app: App, messages: int, rounds: int, threads: int) -> list[str]:
    # Warm the hit row's entry, and every code path, before timing anything.
    for _, actor in OVERHEAD_ROWS:
        run_batch(app, actor, 20)
    samples: dict[str, list[Batch]] = {actor: [] for _, actor in OVERHEAD_ROWS}
    for r in range(rounds):
        order = OVERHEAD_ROWS if r % 2 == 0 else OVERHEAD_ROWS[::-1]  # drift hits every row alike
        for label, actor in order:
            batch = run_batch(app, actor, messages)
            samples[actor].append(batch)
            log(f"  round {r + 1}/{rounds} {label}: {messages / batch.run_s:,.0f} msg/s processed")
    base_send = statistics.median(b.send_s for b in samples["plain"])
    base_run = statistics.median(b.run_s for b in samples["plain"])
    lines = [
        f"**Messages/s, {messages} messages per batch, {threads} worker threads, median of {rounds}:**",
        "",
        "| options | send() msg/s | vs none | processed msg/s | vs none |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, actor in OVERHEAD_ROWS:
        send_s = statistics.median(b.send_s for b in samples[actor])
        run_s = statistics.median(b.run_s for b in samples[actor])
        lines.append(
            f"| {label} | {messages / send_s:,.0f} | {base_send / send_s:.2f}x "
            f"| {messages / run_s:,.0f} | {base_run / run_s:.2f}x |"
        )
    return lines + cpu_table(
        [(label, medians([b.cpu_us for b in samples[actor]])) for label, actor in OVERHEAD_ROWS],
        CPU_COLUMNS,
        "**CPU per message while the worker drains, µs, medians**",
    )


#: The processes of the CPU table, as :class:`CpuMeter` names them, with their column headers.
CPU_COLUMNS = {"this process": "this process (sender, broker and worker)", "redis": "Redis"}


def cap_table(app: App, messages: int, rounds: int, threads: int) -> list[str]:
    rows = [
        ("cachify `pool_key`, pool_max_size=3", "cachify_pool"),
        ("dramatiq ConcurrentRateLimiter, limit=3", "dramatiq_limiter"),
    ]
    samples: dict[str, list[Batch]] = {actor: [] for _, actor in rows}
    for r in range(rounds):
        for label, actor in rows if r % 2 == 0 else rows[::-1]:
            batch = run_batch(app, actor, messages)
            samples[actor].append(batch)
            log(f"  round {r + 1}/{rounds} {label}: {batch.run_s:.2f}s, {batch.retries} retries")
    ideal_s = messages * WORK_S / CAP
    lines = [
        f"**A cap of {CAP} on {messages} messages of {WORK_S * 1000:.0f} ms work, {threads} worker threads, "
        f"both backing off {BACKOFF_S[0] * 1000:.0f} to {BACKOFF_S[1] * 1000:.0f} ms, median of {rounds} "
        f"(at the cap, the batch takes {ideal_s:.2f} s):**",
        "",
        "| cap | time s | msg/s | retries burned | requeues | dead-lettered | peak concurrency |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, actor in rows:
        b = sorted(samples[actor], key=lambda s: s.run_s)[len(samples[actor]) // 2]
        lines.append(
            f"| {label} | {b.run_s:.2f} | {b.done / b.run_s:,.0f} | {b.retries} | {b.requeues} | {b.dead} | {b.peak} |"
        )
    return lines


@contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    from tests.servers import redis_url_or_private

    with redis_url_or_private(url) as found:
        yield found


def clean_up(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"*{RUN}*", count=1000):  # broker, cachify and limiter keys
            client.delete(key)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--quick", action="store_true", help="fewer messages and rounds (~20 s)")
    parser.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    args = parser.parse_args()
    messages, cap_messages, rounds = (1000, 100, 1) if args.quick else (3000, 200, 3)

    with redis_server(args.redis_url) as url:
        app = build_app(url, args.threads)
        try:
            log("option overhead ...")
            report = overhead_table(app, messages, rounds, args.threads)
            log("pool_* vs ConcurrentRateLimiter ...")
            report += ["", *cap_table(app, cap_messages, rounds, args.threads)]
        finally:
            app.broker.close()
            clean_up(url)
    versions = (
        f"dramatiq {dramatiq.__version__}, redis-py {redis.__version__}, Python {sys.version.split()[0]}"
    )
    print(f"_{versions}, {os.cpu_count()} CPUs, Redis at {url}, one process._\n")
    print("\n".join(report))


if __name__ == "__main__":
    main()
