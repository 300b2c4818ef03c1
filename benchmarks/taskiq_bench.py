"""cachify's Taskiq integration: tasks/s with and without each option, and deduplication side by
side with taskiq-deduplication on the same Redis.

    python benchmarks/taskiq_bench.py [--redis-url URL] [--quick] [--markdown out.md]

Redis: ``--redis-url``, else ``REDIS_URL``, else a private ``redis-server`` on a free loopback
port (found and started by ``tests/servers.py``) and stopped at the end. Everything this run
writes is under names carrying its pid (stream, result keys, cachify prefix, dedup prefix) and
is deleted afterwards; nothing is flushed.

Sections (each row: the median of the rounds, in tasks per second). ``RT/task``: requests this
process sent to Redis per task (redis-py's ``send_packed_command`` for blocking requests,
``StreamWriter.writelines`` for asyncio ones, counted over a separate pass of 50 tasks; nothing pipelines, so requests = round trips). For the worker section, whose
requests are sent by other processes, ``cmds/task`` is Redis's ``total_commands_processed``
delta per task instead (minus this process's result polling): every client's commands, those
run inside Lua scripts included.

1. In process, ``InMemoryBroker(await_inplace=True)``: each ``kiq`` sends, runs the task and
   stores its result inline, one at a time, so a row is the per-task cost of that option.
2. Real workers: ``taskiq worker taskiq_bench:broker --workers 2`` over ``RedisStreamBroker``
   and ``RedisAsyncResultBackend``; N tasks are sent (100 sends in flight) and timed from the
   first send until every result is stored.
3. Deduplication, cachify vs taskiq-deduplication (if installed), same Redis: sending with a
   new key each time (accepted) and with a held key (duplicate) to a ``RedisStreamBroker``
   nobody consumes, and the full in-process cycle (send, run, release).

This file is also the worker app of section 2: ``taskiq worker`` imports it as ``taskiq_bench``
with ``CACHIFY_TASKIQ_BENCH`` set, and only then does it build the broker below.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.metadata
import itertools
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Appended, not prepended: `tests.servers` comes from here, the installed cachify is measured.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import redis.asyncio as aredis  # noqa: E402
from harness.cpu import CpuMeter, cpu_table, per_task_us, redis_pid  # noqa: E402
from harness.requests import counting_requests  # noqa: E402
from taskiq import AsyncBroker, InMemoryBroker  # noqa: E402
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker  # noqa: E402

from cachify_core import init_cachify  # noqa: E402
from cachify_core.backends.wire import AsyncWire  # noqa: E402
from cachify_taskiq import CachifyDuplicateError, CachifyMiddleware  # noqa: E402

APP_ENV = "CACHIFY_TASKIQ_BENCH"  #: "<redis url>|<run tag>", set for the worker processes


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the worker app (section 2) ------------------------------------------------------------------
#: Options of the worker rows. Each worker takes up to 100 deliveries at once (Taskiq's default
#: ``--max-async-tasks``), so a pool of 1000 never fills, and one of 4 is full nearly always.
WORKER_ROWS: dict[str, dict[str, Any]] = {
    "no options": {},
    "once_key": {"once_key": "w-{i}"},
    "pool_key, pool_max_size=1000 (never full)": {"pool_key": "w1000", "pool_max_size": 1000},
    "pool_key, pool_max_size=4, pool_backoff=(0.01, 0.1) (requeues)": {
        "pool_key": "w4",
        "pool_max_size": 4,
        "pool_backoff": (0.01, 0.1),
    },
    "cache_key, hits": {"cache_key": "w-{i}"},
    "once_key + pool_key (never full) + cache_key (misses)": {
        "once_key": "a-{i}",
        "pool_key": "a1000",
        "pool_max_size": 1000,
        "cache_key": "a-{i}",
    },
}


#: The floor of the gated row: no cachify option, but the round trips a gated task makes, as bare
#: PINGs to the same Redis (one by the sender before each ``kiq``, two in the body): what three
#: round trips cost, whatever they do. A gated task cannot be cheaper than this.
FLOOR_ROW = "floor: no options, 3 bare PINGs (1 at send, 2 in the body)"
#: The same floor with the PINGs on cachify's own asyncio wire (``cachify_core.backends.wire``),
#: which costs the client less per round trip than redis-py's ``execute_command``: the least three
#: round trips cost cachify itself.
WIRE_FLOOR_ROW = "floor on cachify's wire: no options, 3 bare PINGs (1 at send, 2 in the body)"
#: The floor rows, and whether their PINGs go through cachify's wire.
FLOOR_ROWS = {FLOOR_ROW: False, WIRE_FLOOR_ROW: True}


def task_name(row: str) -> str:
    return "bench:" + "".join(c if c.isalnum() else "_" for c in row)


class WorkerApp:
    def __init__(self, url: str, tag: str) -> None:
        self.url, self.tag = url, tag
        self.cachify = init_cachify(url=url, prefix=f"CFY-TQBENCH-{tag}-", is_global=False)
        self.queue = f"tqbench-{tag}"
        self.broker = (
            RedisStreamBroker(url, queue_name=self.queue)
            .with_result_backend(
                RedisAsyncResultBackend(url, prefix_str=f"tqbench-{tag}", result_ex_time=600)
            )
            .with_middlewares(CachifyMiddleware(cachify=self.cachify))
        )
        self.tasks = {
            row: self.broker.task(task_name(row), **labels)(work_function())
            for row, labels in WORKER_ROWS.items()
        }
        for row, wire in FLOOR_ROWS.items():
            self.tasks[row] = self.broker.task(task_name(row))(pinging_function(url, wire))


def work_function(kind: str = "async") -> Callable[[int], Any]:
    """A fresh trivial task function (Taskiq renames the function it registers: one per task)."""
    if kind == "async":

        async def work(i: int) -> int:
            return i

        return work

    def work_sync(i: int) -> int:
        return i

    return work_sync


def pinging_function(url: str, wire: bool) -> Callable[[int], Any]:
    """A floor row's task: two PINGs to Redis, on one client per worker process (through
    cachify's asyncio wire with ``wire``)."""
    pings: list[Callable[[], Awaitable[Any]]] = []

    async def pinging(i: int) -> int:
        if not pings:  # kept for the worker process's life
            pings.append(_pinger(aredis.Redis.from_url(url), wire)[0])
        await pings[0]()
        await pings[0]()
        return i

    return pinging


def _pinger(client: aredis.Redis, wire: bool) -> tuple[Callable[[], Awaitable[Any]], Callable[[], None]]:
    """One bare round trip: a PING through redis-py, or through cachify's wire over ``client``;
    and what closes the wire's own connections (redis-py's close with ``client``)."""
    if not wire:
        return client.ping, lambda: None
    through = AsyncWire(client)
    return (lambda: through("PING")), through.abandon


_app_env = os.environ.get(APP_ENV)
if _app_env and __name__ != "__main__":
    _url, _, _tag = _app_env.partition("|")
    app = WorkerApp(_url, _tag)
    broker = app.broker


# -- results -------------------------------------------------------------------------------------
@dataclass
class Row:
    section: str
    name: str
    rate: float  #: tasks per second
    per_task: float  #: round trips (or, for the worker section, server commands) per task
    #: worker section: µs of CPU per task by process, of the run kept (:mod:`harness.cpu`)
    cpu_us: dict[str, float] = field(default_factory=dict)


#: The cost column of each section: round trips counted here, or commands counted by Redis.
RT, CMDS = "RT/task", "cmds/task"
SECTION_COST: dict[str, str] = {}

#: Task arguments are unique across the whole run, so no row finds another row's keys.
_unique = itertools.count()


async def server_commands(url: str) -> int:
    """Redis's count of commands processed so far (one INFO call, itself counted)."""
    client = aredis.Redis.from_url(url)
    try:
        return int((await client.info("stats"))["total_commands_processed"])
    finally:
        await client.aclose()


RT_PASS = 50  #: tasks of the separate pass that counts round trips


async def measure(
    variants: Mapping[str, Callable[[int], Awaitable[None]]], n: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """Run ``n`` tasks per round of every variant, rotating their order each round: per variant
    the median tasks/s, and round trips per task from a separate pass."""
    names = list(variants)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm up: connections, scripts, imports
        await variants[name](min(n, 50))
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started = time.perf_counter()
            await variants[name](n)
            rates[name].append(n / (time.perf_counter() - started))
    trips: dict[str, float] = {}
    for name in names:
        with counting_requests() as count:
            await variants[name](RT_PASS)
        trips[name] = count[0] / RT_PASS
    return {name: (statistics.median(rates[name]), trips[name]) for name in names}


def add_rows(rows: list[Row], section: str, cost: str, measured: Mapping[str, tuple[float, float]]) -> None:
    SECTION_COST[section] = cost
    rows += [Row(section, name, rate, per_task) for name, (rate, per_task) in measured.items()]


# -- section 1: in process -------------------------------------------------------------------------
IN_PROCESS_ROWS: dict[str, dict[str, Any]] = {
    "CachifyMiddleware, no options": {},
    "once_key (queued)": {"once_key": "p-{i}"},
    "once_key, once_mode='running'": {"once_key": "p-{i}", "once_mode": "running"},
    "pool_key, pool_max_size=4": {"pool_key": "p", "pool_max_size": 4},
    "cache_key, misses": {"cache_key": "miss-{i}"},
    "cache_key, hits": {"cache_key": "hit"},
    "once_key + pool_key + cache_key (misses)": {
        "once_key": "a-{i}",
        "pool_key": "a",
        "pool_max_size": 4,
        "cache_key": "a-{i}",
    },
}


def inplace_broker(*middlewares: Any) -> InMemoryBroker:
    return InMemoryBroker(await_inplace=True, max_stored_results=64).with_middlewares(*middlewares)


async def sender(broker: AsyncBroker, task: Any) -> Callable[[int], Awaitable[None]]:
    await broker.startup()

    async def send(n: int) -> None:
        for _ in range(n):
            await task.kiq(next(_unique))

    return send


async def section_in_process(url: str, tag: str, n: int, rounds: int) -> list[Row]:
    cachify = init_cachify(url=url, prefix=f"CFY-TQBENCH-{tag}-", is_global=False)
    rows: list[Row] = []
    for kind in ("async", "sync"):
        plain = inplace_broker()
        variants = {"no middleware": await sender(plain, plain.task(f"plain-{kind}")(work_function(kind)))}
        brokers = [plain]
        for row, labels in IN_PROCESS_ROWS.items():
            broker = inplace_broker(CachifyMiddleware(cachify=cachify))
            brokers.append(broker)
            task = broker.task(f"{task_name(row)}-{kind}", **labels)(work_function(kind))
            variants[row] = await sender(broker, task)
        log(f"in process, {kind} tasks: {len(variants)} rows")
        add_rows(rows, f"In process ({kind} task)", RT, await measure(variants, n, rounds))
        for broker in brokers:
            await broker.shutdown()
    return rows


# -- section 2: real workers ----------------------------------------------------------------------
@contextlib.contextmanager
def running_workers(url: str, tag: str) -> Any:
    log_path = Path(tempfile.mkstemp(prefix="tqbench-workers-", suffix=".log")[1])
    env = {
        **os.environ,
        APP_ENV: f"{url}|{tag}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    taskiq = Path(sys.executable).with_name("taskiq")
    command = [str(taskiq), "worker", "taskiq_bench:broker", "--workers", "2"]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=Path(__file__).parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while log_path.read_text(errors="replace").count("Listening started") < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("workers did not start:\n" + log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.05)
        yield proc.pid
    finally:
        # Taskiq 0.13's stream workers may hang in shutdown: SIGTERM, then SIGKILL the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        log_path.unlink(missing_ok=True)


async def section_workers(url: str, tag: str, n: int) -> list[Row]:
    os.environ[APP_ENV] = f"{url}|{tag}"
    module = importlib.import_module("taskiq_bench")
    worker_app: WorkerApp = module.app
    best: dict[str, tuple[float, float]] = {}
    cpu: dict[str, dict[str, float]] = {}
    with running_workers(url, tag) as workers_pid:
        meter = CpuMeter(worker=workers_pid, redis=redis_pid(url))
        await worker_app.broker.startup()
        try:
            rows = list(worker_app.tasks)
            for row in rows + rows[::-1]:  # every row twice, in turn: the best run is kept
                before = meter.read()
                rate, commands = await _worker_run(
                    url,
                    worker_app.tasks[row],
                    n,
                    cached=row.startswith("cache_key"),
                    ping_at_send=FLOOR_ROWS.get(row),
                )
                log(f"workers: {row}: {rate:,.0f} tasks/s")
                if rate > best.get(row, (0.0, 0.0))[0]:
                    best[row] = (rate, commands)
                    cpu[row] = per_task_us(before, meter.read(), n)
        finally:
            await worker_app.broker.shutdown()
    out: list[Row] = []
    add_rows(
        out, "2 worker processes, RedisStreamBroker (best of 2 runs)", CMDS, {row: best[row] for row in rows}
    )
    for made in out:
        made.cpu_us = cpu[made.name]
    return out


async def _worker_run(
    url: str, task: Any, n: int, cached: bool, ping_at_send: bool | None = None
) -> tuple[float, float]:
    """Send ``n`` tasks (100 sends in flight) and wait for every result: tasks/s, cmds/task.
    ``ping_at_send``: each send first PINGs Redis (a floor row's round trip at send; ``True``:
    through cachify's wire)."""
    keys = 10 if cached else n
    if cached:  # fill the cache first: the run measures hits
        warm = [await task.kiq(i) for i in range(keys)]
        await asyncio.gather(*(_wait(h) for h in warm))
    base = next(_unique) * n if not cached else 0  # new keys in every run (once_key)
    pinger = aredis.Redis.from_url(url)
    ping, close_wire = _pinger(pinger, bool(ping_at_send))
    if ping_at_send is not None:  # its connections open before the clock starts (100 sends in flight)
        await asyncio.gather(*(ping() for _ in range(100)))
    before = await server_commands(url)
    started = time.perf_counter()

    async def send(i: int) -> Any:
        if ping_at_send is not None:
            await ping()
        return await task.kiq(i)

    handles: list[Any] = []
    for chunk in range(0, n, 100):
        handles += await asyncio.gather(*(send(base + i % keys) for i in range(chunk, min(n, chunk + 100))))
    with counting_requests() as polls:  # our result polling: not the tasks' cost
        for handle in handles:
            await _wait(handle)
    rate = n / (time.perf_counter() - started)
    close_wire()
    await pinger.aclose()
    return rate, (await server_commands(url) - before - polls[0] - 1) / n


async def _wait(handle: Any) -> None:
    deadline = time.monotonic() + 120
    while not await handle.is_ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {handle.task_id} not done in 120s")
        await asyncio.sleep(0.005)


# -- section 3: deduplication beside taskiq-deduplication ----------------------------------------
async def section_dedup(url: str, tag: str, n: int, rounds: int) -> tuple[list[Row], str]:
    try:
        from taskiq_deduplication import (  # type: ignore[import-untyped]
            DuplicateTaskError,
            RedisDeduplicationMiddleware,
        )
    except ImportError:
        return (
            [],
            "taskiq-deduplication is not installed (`pip install taskiq-deduplication`): cachify rows only",
        )
    peer = f"taskiq-deduplication {importlib.metadata.version('taskiq-deduplication')}"
    cachify = init_cachify(url=url, prefix=f"CFY-TQBENCH-{tag}-", is_global=False)
    queue = f"tqbench-dedup-{tag}"
    rows: list[Row] = []

    def stream_broker(*middlewares: Any) -> RedisStreamBroker:
        return RedisStreamBroker(url, queue_name=queue, maxlen=1000).with_middlewares(*middlewares)

    def peer_middleware() -> Any:
        return RedisDeduplicationMiddleware(redis_url=url, key_prefix=f"tqdedup-bench-{tag}", heartbeat=False)

    # Sending only, accepted (a new key each time) and duplicate (a held key).
    none_b = stream_broker()
    cfy_b = stream_broker(CachifyMiddleware(cachify=cachify))
    cfy_raise_b = stream_broker(CachifyMiddleware(cachify=cachify))
    peer_b = stream_broker(peer_middleware())
    none_t = none_b.task("d:none")(work_function())
    cfy_t = cfy_b.task("d:cfy", once_key="d-{i}")(work_function())
    cfy_raise_t = cfy_raise_b.task("d:cfyraise", once_key="d-{i}", once_raise=True)(work_function())
    peer_t = peer_b.task("d:peer")(work_function())
    brokers = [none_b, cfy_b, cfy_raise_b, peer_b]
    accepted = {
        "no deduplication": await sender(none_b, none_t),
        "cachify once_key": await sender(cfy_b, cfy_t),
        peer: await sender(peer_b, peer_t),
    }
    log("dedup: sending, accepted")
    add_rows(rows, "Dedup: send to a stream, new key (accepted)", RT, await measure(accepted, n, rounds))

    held = -1
    await cfy_t.kiq(held)  # both hold key -1 from here on: nobody consumes the stream
    await peer_t.kiq(held)

    async def dup_cachify(count: int) -> None:
        for _ in range(count):
            await cfy_t.kiq(held)  # returns the holder's handle

    async def dup_cachify_raise(count: int) -> None:
        for _ in range(count):
            with contextlib.suppress(CachifyDuplicateError):
                await cfy_raise_t.kiq(held)

    async def dup_peer(count: int) -> None:
        for _ in range(count):
            with contextlib.suppress(DuplicateTaskError):
                await peer_t.kiq(held)

    duplicates = {
        "cachify once_key (returns the holder's handle)": dup_cachify,
        "cachify once_key, once_raise=True": dup_cachify_raise,
        f"{peer} (raises)": dup_peer,
    }
    log("dedup: sending, duplicates")
    add_rows(rows, "Dedup: send to a stream, held key (duplicate)", RT, await measure(duplicates, n, rounds))
    for broker in brokers:
        await broker.shutdown()

    # The whole cycle in process: send, run, release.
    none_c = inplace_broker()
    cfy_c = inplace_broker(CachifyMiddleware(cachify=cachify))
    peer_c = inplace_broker(peer_middleware())
    cycle = {
        "no deduplication": await sender(none_c, none_c.task("c:none")(work_function())),
        "cachify once_key": await sender(cfy_c, cfy_c.task("c:cfy", once_key="c-{i}")(work_function())),
        peer: await sender(peer_c, peer_c.task("c:peer")(work_function())),
    }
    log("dedup: full cycle")
    add_rows(rows, "Dedup: send + run + release, in process", RT, await measure(cycle, n, rounds))
    for inplace in (none_c, cfy_c, peer_c):
        await inplace.shutdown()
    client = aredis.Redis.from_url(url)
    await client.delete(queue)
    await client.aclose()
    return rows, ""


# -- driver --------------------------------------------------------------------------------------
async def cleanup(url: str, tag: str) -> None:
    client = aredis.Redis.from_url(url)
    try:
        for pattern in (f"*TQBENCH-{tag}-*", f"tqbench-{tag}*", f"tqdedup-bench-{tag}*"):
            async for key in client.scan_iter(match=pattern, count=1000):
                await client.delete(key)
    finally:
        await client.aclose()


def render(rows: list[Row], notes: list[str], machine: str, command: str) -> str:
    lines = [f"`{command}` — {machine}", ""]
    section = None
    for i, row in enumerate(rows):
        if row.section != section:
            section = row.section
            cost = SECTION_COST[section]
            lines += ["", f"**{section}**", "", f"| | tasks/s | {cost} |", "|---|---:|---:|"]
        lines.append(f"| {row.name} | {row.rate:,.0f} | {row.per_task:.1f} |")
        if row.cpu_us and (i + 1 == len(rows) or rows[i + 1].section != section):
            # under the section it measured (the worker section: the only one with CPU read)
            lines += cpu_table(
                [(r.name, r.cpu_us) for r in rows if r.section == section and r.cpu_us],
                CPU_COLUMNS,
                "**CPU per task in this section's kept runs, µs**",
            )
    return "\n".join(lines + [""] + [f"- {note}" for note in notes if note]) + "\n"


#: The processes of the CPU table, as :class:`CpuMeter` names them, with their column headers.
CPU_COLUMNS = {
    "worker": "taskiq main process",
    "worker children": "its 2 workers",
    "redis": "Redis",
    "this process": "this process (sends, polls for results)",
}


async def run(url: str, tag: str, quick: bool) -> tuple[list[Row], list[str]]:
    n, rounds, worker_n = (150, 3, 500) if quick else (400, 7, 2000)
    rows: list[Row] = []
    notes: list[str] = []
    try:
        rows += await section_in_process(url, tag, n, rounds)
        rows += await section_workers(url, tag, worker_n)
        dedup_rows, note = await section_dedup(url, tag, n, rounds)
        rows += dedup_rows
        notes.append(note)
    finally:
        await cleanup(url, tag)
    return rows, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    tag = str(os.getpid())
    from tests.servers import redis_url_or_private

    with redis_url_or_private(args.redis_url) as url:
        log(f"Redis at {url}")
        # Library log lines (taskiq-deduplication warns on every duplicate) would time stderr.
        logging.disable(logging.WARNING)
        rows, notes = asyncio.run(run(url, tag, args.quick))
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("taskiq", "taskiq-redis", "redis"))
    machine = (
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, {versions}"
    )
    command = "python benchmarks/taskiq_bench.py" + (" --quick" if args.quick else "")
    report = render(rows, notes, machine, command)
    print(report)
    if args.markdown is not None:
        args.markdown.write_text(report)


if __name__ == "__main__":
    main()
