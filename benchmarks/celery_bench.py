# mypy: disable-error-code="untyped-decorator"
# (celery ships no type information, so every @app.task is an untyped decorator)
"""Celery tasks/s through a real worker, with and without each cachify task option, and
cachify's ``once_key`` side by side with celery-once on deduplication.

    python benchmarks/celery_bench.py [--redis-url URL] [--quick] [--markdown out.md]

Redis: ``--redis-url``, else ``REDIS_URL``, else a private ``redis-server`` on a free loopback
port (started by ``tests/servers.py``, stopped at the end). One ``celery worker`` process
(prefork, 2 children) consumes a queue of its own. See integrations/celery/README.md
("Benchmarks") for what each row measures.

This file is also the worker's app module: ``celery -A benchmarks.celery_bench worker`` builds
the same app from ``CACHIFY_CELERY_BENCH_URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import redis  # noqa: E402
from celery import Celery, Task  # noqa: E402

from benchmarks.harness.cpu import CpuMeter, cpu_table, medians, per_task_us, redis_pid  # noqa: E402
from cachify_celery import CachifyTask  # noqa: E402
from cachify_core import Cachify, init_cachify  # noqa: E402

URL_ENV = "CACHIFY_CELERY_BENCH_URL"
TAG_ENV = "CACHIFY_CELERY_BENCH_TAG"

try:  # optional: the dedup comparison runs only where celery-once is installed
    from celery_once import QueueOnce  # type: ignore[import-untyped, import-not-found, unused-ignore]
except ImportError:  # pragma: no cover
    QueueOnce = None


@dataclass
class Bench:
    """The app, its queue, its Cachify instance and the benchmarked tasks by row name."""

    app: Any
    queue: str
    cachify: Cachify
    tasks: dict[str, Any] = field(default_factory=dict)


def build(url: str, tag: str) -> Bench:
    """The benchmark app; identical in the driver and in the worker (same ``tag``)."""
    queue = f"cachify-bench-{tag}"
    instance = init_cachify(url=url, prefix=f"CFY-CELERY-BENCH-{tag}-", is_global=False)
    app = Celery("cachify_bench", broker=url, backend=url, task_cls=CachifyTask, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        result_expires=300,  # results of a run on a shared server clean themselves up
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        ONCE={"backend": "celery_once.backends.Redis", "settings": {"url": url, "default_timeout": 3600}},
    )
    bench = Bench(app, queue, instance)

    def task(row: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        def declare(fun: Callable[..., Any]) -> Any:
            made = app.task(name=f"bench.{fun.__name__}", shared=False, cachify=instance, **options)(fun)
            bench.tasks[row] = made
            return made

        return declare

    @task("celery Task", base=Task)
    def celery_plain(n: int) -> int:
        return n

    @task("CachifyTask, no options")
    def cachify_plain(n: int) -> int:
        return n

    @task("once_key", once_key=f"bench-{tag}-{{n}}")
    def once(n: int) -> int:
        return n

    @task("pool_key (max 64, never full)", pool_key="bench-pool", pool_max_size=64)
    def pooled(n: int) -> int:
        return n

    @task("cache_key, miss", cache_key="bench-miss-{n}", cache_ttl=300)
    def cache_miss(n: int) -> int:
        return n

    @task("cache_key, hit", cache_key="bench-hit", cache_ttl=300)
    def cache_hit(n: int) -> int:
        return n

    @task(
        "once + pool + cache (miss)",
        once_key=f"bench-all-{tag}-{{n}}",
        pool_key="bench-all",
        pool_max_size=64,
        cache_key="bench-all-{n}",
        cache_ttl=300,
    )
    def everything(n: int) -> int:
        return n

    pinger: list[Any] = []  # made in the child that runs the task (prefork forks after import)

    @task("floor: no options, 2 bare PINGs in the body")
    def floor(n: int) -> int:
        if not pinger:
            pinger.append(redis.Redis.from_url(url))
        pinger[0].ping()
        pinger[0].ping()
        return n

    if QueueOnce is not None:

        @task("celery-once QueueOnce", base=QueueOnce, once={"graceful": True, "keys": ["n"]})
        def celery_once(n: int) -> int:
            return n

    return bench


if os.environ.get(URL_ENV):  # imported by `celery -A benchmarks.celery_bench worker`
    _bench = build(os.environ[URL_ENV], os.environ[TAG_ENV])
    app = _bench.app


# -- driver ---------------------------------------------------------------------------------------
#: Extra Redis round trips per task over a plain CachifyTask, by row (cachify_core.tasks and
#: cachify_celery.slot_records; prefork children also record their slot).
ROUND_TRIPS = {
    "celery Task": "0",
    "CachifyTask, no options": "0",
    "once_key": "3 (claim; hold check; release)",
    "pool_key (max 64, never full)": "2 (acquire; release)",
    "cache_key, miss": "2 (get; set)",
    "cache_key, hit": "1 (get), body skipped",
    "once + pool + cache (miss)": "3 (claim; admission batch: get, hold, slot; finish batch: set, slot, hold)",
    "celery-once QueueOnce": "2 (lock; delete)",
    "floor: no options, 2 bare PINGs in the body": "2 (PING; PING): what a gated task's 2 in the worker cost at least",
}


@dataclass(frozen=True)
class Profile:
    tasks: int  # tasks per timed round
    rounds: int  # rounds per row; rows alternate within a round; the median is kept
    duplicates: int  # duplicate sends per dedup round


#: Results read per poll while waiting for a round to finish.
POLL_WINDOW = 100

FULL = Profile(tasks=2000, rounds=5, duplicates=5000)
QUICK = Profile(tasks=400, rounds=1, duplicates=1000)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    from tests.servers import redis_url_or_private

    with redis_url_or_private(url) as found:
        yield found


class Worker:
    """One ``celery worker`` (prefork, 2 children) on the bench queue, in its own session."""

    def __init__(self, url: str, tag: str, bench: Bench) -> None:
        self.bench = bench
        self.node = f"bench-{tag}@{socket.gethostname()}"
        env = {**os.environ, URL_ENV: url, TAG_ENV: tag, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "benchmarks.celery_bench", "worker", "--pool=prefork",
             "--concurrency=2", f"--queues={bench.queue}", f"--hostname={self.node}", "--loglevel=WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, start_new_session=True, stdout=sys.stderr, stderr=sys.stderr,
        )  # fmt: skip

    def ready(self, timeout_s: float = 60) -> None:
        self.bench.tasks["celery Task"].delay(0).get(timeout=timeout_s)

    def pause(self) -> None:
        self.bench.app.control.cancel_consumer(
            self.bench.queue, destination=[self.node], reply=True, timeout=10
        )

    def resume(self) -> None:
        self.bench.app.control.add_consumer(self.bench.queue, destination=[self.node], reply=True, timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def wait_for_results(bench: Bench, client: Any, ids: list[str], timeout_s: float = 300) -> None:
    """Poll the result backend until every task has a result.

    Tasks finish roughly in the order they were sent, so each poll reads only the oldest
    ``POLL_WINDOW`` results still missing: the poller stays light next to the worker it times.
    """
    backend = bench.app.backend
    pending = [backend.get_key_for_task(i) for i in ids]
    deadline = time.monotonic() + timeout_s
    while pending:
        window = pending[:POLL_WINDOW]
        found = client.mget(window)
        missing = [key for key, value in zip(window, found, strict=True) if value is None]
        pending = missing + pending[POLL_WINDOW:]
        if missing:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} of {len(ids)} tasks have no result after {timeout_s}s")
            time.sleep(0.02)


@dataclass
class Row:
    name: str
    send: list[float] = field(default_factory=list)  # tasks sent per second
    drain: list[float] = field(default_factory=list)  # tasks through the worker per second
    cpu_us: list[dict[str, float]] = field(default_factory=list)  # µs of CPU per task, by process


def measure(bench: Bench, worker: Worker, client: Any, row: Row, start: int, n: int, meter: CpuMeter) -> None:
    """One round: send ``n`` tasks while the worker does not consume, then time the worker
    (and read the CPU each process spent meanwhile)."""
    task = bench.tasks[row.name]
    worker.pause()
    began = time.perf_counter()
    ids = [task.delay(start + i).id for i in range(n)]
    row.send.append(n / (time.perf_counter() - began))
    before = meter.read()
    began = time.perf_counter()
    worker.resume()
    wait_for_results(bench, client, ids)
    row.drain.append(n / (time.perf_counter() - began))
    row.cpu_us.append(per_task_us(before, meter.read(), n))
    log(f"  sent {row.send[-1]:,.0f}/s, through the worker {row.drain[-1]:,.0f}/s")


def dedup(bench: Bench, worker: Worker, client: Any, rows: dict[str, list[float]], m: int) -> None:
    """Duplicate sends per second while the key's holder is queued (1 held key, ``m`` sends)."""
    names = [name for name in ("once_key", "celery-once QueueOnce") if name in bench.tasks]
    worker.pause()
    try:
        for name in names:
            task = bench.tasks[name]
            holder = task.delay(-1)
            began = time.perf_counter()
            for _ in range(m):
                result = task.delay(-1)
            rows.setdefault(name, []).append(m / (time.perf_counter() - began))
            if name == "once_key":
                assert result.id == holder.id, "a duplicate was sent"
            else:
                assert result.state == "REJECTED", "a duplicate was sent"
    finally:
        client.delete(bench.queue)  # the held tasks never run; their holds are deleted below
        delete_bench_keys(client, bench)
        worker.resume()


def delete_bench_keys(client: Any, bench: Bench) -> None:
    for pattern in (f"{bench.cachify.prefix}*", "qo_bench.*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])


def report(rows: list[Row], dedup_rows: dict[str, list[float]], profile: Profile, url: str) -> list[str]:
    base = statistics.median(next(r for r in rows if r.name == "CachifyTask, no options").drain)
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"celery {_version('celery')}, redis-py {_version('redis')}; Redis {_server_version(url)} on loopback. "
        f"{profile.tasks} tasks per round, median of {profile.rounds} rounds; worker: prefork, 2 children.",
        "",
        "| Task options | extra Redis round trips / task | sent / s | through the worker / s | vs CachifyTask without options |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        drain = statistics.median(r.drain)
        lines.append(
            f"| {r.name} | {ROUND_TRIPS.get(r.name, '?')} | {statistics.median(r.send):,.0f} | "
            f"{drain:,.0f} | {drain / base:.2f}x |"
        )
    lines += cpu_table(
        [(r.name, medians(r.cpu_us)) for r in rows],
        CPU_COLUMNS,
        "CPU per task while the worker drains, µs, medians over rounds",
        base="CachifyTask, no options",
    )
    if dedup_rows:
        lines += [
            "",
            "| Dedup: duplicate sends while the holder is queued | sends / s |",
            "|---|---|",
        ]
        lines += [f"| {name} | {statistics.median(v):,.0f} |" for name, v in dedup_rows.items()]
    return lines


#: The processes of the CPU table, as :class:`CpuMeter` names them, with their column headers.
CPU_COLUMNS = {
    "worker": "worker main process",
    "worker children": "its 2 children",
    "redis": "Redis",
    "this process": "this process (the result poller)",
}


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _server_version(url: str) -> str:
    with contextlib.closing(redis.Redis.from_url(url)) as client:
        return str(client.info("server").get("redis_version", "?"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--quick", action="store_true", help="one short round (~10 s)")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    options = parser.parse_args()
    profile = QUICK if options.quick else FULL
    tag = str(os.getpid())
    with redis_server(options.redis_url) as url:
        bench = build(url, tag)
        client = redis.Redis.from_url(url)
        worker = Worker(url, tag, bench)
        try:
            worker.ready()
            meter = CpuMeter(worker=worker.proc.pid, redis=redis_pid(url))
            bench.tasks["cache_key, hit"].delay(0).get(timeout=30)  # the entry every hit reads
            if QueueOnce is None:
                log("celery-once is not installed (pip install celery_once): its rows are skipped")
            rows = [Row(name) for name in bench.tasks]
            dedup_rows: dict[str, list[float]] = {}
            start = 1
            for round_no in range(profile.rounds):
                # rotate the order each round, so drift on a shared machine spreads over every row
                order = rows[round_no % len(rows) :] + rows[: round_no % len(rows)]
                for row in order:
                    log(f"round {round_no + 1}/{profile.rounds}: {row.name}")
                    measure(bench, worker, client, row, start, profile.tasks, meter)
                    start += profile.tasks
                dedup(bench, worker, client, dedup_rows, profile.duplicates)
            lines = report(rows, dedup_rows, profile, url)
        finally:
            worker.stop()
            delete_bench_keys(client, bench)
            client.delete(bench.queue)
            client.close()
    print("\n".join(lines))
    if options.markdown:
        options.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
