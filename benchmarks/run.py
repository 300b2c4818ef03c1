"""cachify vs py-cachify 3.1.0, side by side in one run, on the same Redis and in memory.

    python benchmarks/run.py [--redis-url URL] [--quick] [--markdown out.md]

Redis: ``--redis-url``, else ``REDIS_URL``, else a private ``redis-server`` started on a free
loopback port (found and run by ``tests/servers.py``) and stopped at the end. Both libraries
use their own key prefix (with this run's pid), and their keys are deleted afterwards.

The Markdown table goes to stdout (and to ``--markdown``); progress goes to stderr.
See ``benchmarks/README.md`` for what every row measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Appended, not prepended: `tests.servers` comes from here, while an installed cachify (or one put
# first with PYTHONPATH, e.g. a `git archive` snapshot) is the one measured.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import py_cachify as pyc  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aredis  # noqa: E402
from harness.requests import counting_requests  # noqa: E402

import cachify_core as cfy  # noqa: E402

LIBS = ("py-cachify", "cachify")
PREFIX = {"py-cachify": f"PYC-BENCH-{os.getpid()}-", "cachify": f"CFY-BENCH-{os.getpid()}-"}
POOL_FULL: dict[str, type[Exception]] = {
    "py-cachify": pyc.CachifyPoolFullError,
    "cachify": cfy.CachifyPoolFullError,
}


@dataclass(frozen=True)
class Profile:
    rounds: int  # timed rounds per library and row (libraries alternate; the median is kept)
    round_s: float  # target length of one timed round
    warmup_s: float  # untimed warm-up, also used to size the rounds
    contention_s: float  # length of one multi-process pool run
    contention_runs: int  # runs per library, alternating libraries; the median is kept
    procs: int
    handovers: int


FULL = Profile(
    rounds=21, round_s=0.1, warmup_s=0.15, contention_s=3.0, contention_runs=2, procs=4, handovers=50
)
QUICK = Profile(
    rounds=5, round_s=0.05, warmup_s=0.05, contention_s=1.5, contention_runs=1, procs=4, handovers=15
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- results ------------------------------------------------------------------------------------
@dataclass
class Row:
    section: str
    name: str
    kind: str  # "op": seconds per op; "rate": ops per second; "latency": seconds
    values: dict[str, float]
    rts: dict[str, float] | None = None  # measured round trips per op
    note: str = ""

    @property
    def ratio(self) -> float:
        """How many times better cachify is (throughput ratio; inverse for times)."""
        p, c = self.values["py-cachify"], self.values["cachify"]
        return c / p if self.kind == "rate" else p / c

    def cell(self, lib: str) -> str:
        v = self.values[lib]
        if self.kind == "op":
            return f"{v * 1e6:,.1f} µs ({1 / v:,.0f}/s)"
        if self.kind == "rate":
            return f"{v:,.0f}/s"
        return f"{v * 1e3:,.2f} ms"

    def rt_cell(self) -> str:
        if self.rts is None:
            return "-"
        return " / ".join(f"{self.rts[lib]:g}" for lib in LIBS)


# -- timing -------------------------------------------------------------------------------------
def run_sync(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start


async def run_async(fn: Callable[[], Awaitable[object]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return time.perf_counter() - start


def _iterations(per_op_s: float, prof: Profile) -> int:
    return max(20, int(prof.round_s / per_op_s))


def compare_sync(fns: dict[str, Callable[[], object]], prof: Profile) -> dict[str, float]:
    """Median seconds per op of each library; rounds alternate which library goes first."""
    sizes = {}
    for lib, fn in fns.items():
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < prof.warmup_s:
            fn()
            n += 1
        sizes[lib] = _iterations(elapsed / n, prof)
    samples: dict[str, list[float]] = {lib: [] for lib in fns}
    for r in range(prof.rounds):
        for lib in list(fns)[:: 1 if r % 2 == 0 else -1]:
            samples[lib].append(run_sync(fns[lib], sizes[lib]) / sizes[lib])
    return {lib: statistics.median(s) for lib, s in samples.items()}


async def compare_async(fns: dict[str, Callable[[], Awaitable[object]]], prof: Profile) -> dict[str, float]:
    sizes = {}
    for lib, fn in fns.items():
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < prof.warmup_s:
            await fn()
            n += 1
        sizes[lib] = _iterations(elapsed / n, prof)
    samples: dict[str, list[float]] = {lib: [] for lib in fns}
    for r in range(prof.rounds):
        for lib in list(fns)[:: 1 if r % 2 == 0 else -1]:
            samples[lib].append(await run_async(fns[lib], sizes[lib]) / sizes[lib])
    return {lib: statistics.median(s) for lib, s in samples.items()}


# -- round trips: harness/requests.py counts the requests sent -----------------------------------
N_COUNT = 50


def rts_sync(fns: dict[str, Callable[[], object]]) -> dict[str, float]:
    out = {}
    for lib, fn in fns.items():
        with counting_requests() as count:
            run_sync(fn, N_COUNT)
        out[lib] = round(count[0] / N_COUNT, 2)
    return out


async def rts_async(fns: dict[str, Callable[[], Awaitable[object]]]) -> dict[str, float]:
    out = {}
    for lib, fn in fns.items():
        with counting_requests() as count:
            await run_async(fn, N_COUNT)
        out[lib] = round(count[0] / N_COUNT, 2)
    return out


# -- library setup ------------------------------------------------------------------------------
def init_redis(lib: str, url: str, with_async: bool = False) -> None:
    """Each library's global instance on ``url``, as its docs show it."""
    if lib == "cachify":
        cfy.init_cachify(url=url, prefix=PREFIX[lib])
    else:
        pyc.init_cachify(
            sync_client=redis.Redis.from_url(url),
            async_client=aredis.Redis.from_url(url) if with_async else None,
            prefix=PREFIX[lib],
        )


MODS: dict[str, Any] = {"py-cachify": pyc, "cachify": cfy}


def sync_ops(lib: str, tag: str) -> dict[str, Callable[[], object]]:
    """The three sync operations of one library: cached hit, lock and pool acquire+release."""
    m = MODS[lib]

    @m.cached(key=f"{tag}-cached-{{x}}")
    def compute(x: int) -> int:
        return x * 2

    compute(21)  # the miss; every timed call is a hit

    def cached_hit() -> object:
        return compute(21)

    def lock_cycle() -> None:
        with m.lock(f"{tag}-lock"):
            pass

    def pool_cycle() -> None:
        with m.pool(f"{tag}-pool", max_size=10):
            pass

    return {"cached hit": cached_hit, "lock acquire+release": lock_cycle, "pool acquire+release": pool_cycle}


def async_ops(lib: str, tag: str) -> dict[str, Callable[[], Awaitable[object]]]:
    m = MODS[lib]

    @m.cached(key=f"{tag}-acached-{{x}}")
    async def compute(x: int) -> int:
        return x * 2

    def cached_hit() -> Awaitable[object]:
        return compute(21)

    async def lock_cycle() -> None:
        async with m.lock(f"{tag}-alock"):
            pass

    return {"cached hit": cached_hit, "lock acquire+release": lock_cycle}


def pivot(per_lib: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{lib: {op: fn}} -> {op: {lib: fn}}."""
    ops = next(iter(per_lib.values()))
    return {op: {lib: per_lib[lib][op] for lib in per_lib} for op in ops}


# -- Redis, one process -------------------------------------------------------------------------
def bench_redis_single(url: str, prof: Profile) -> list[Row]:
    rows = []
    for lib in LIBS:
        init_redis(lib, url)
    ops = pivot({lib: sync_ops(lib, "r") for lib in LIBS})
    for op, fns in ops.items():
        log(f"redis sync {op} ...")
        rows.append(Row("Redis, 1 process", f"{op} (sync)", "op", compare_sync(fns, prof), rts_sync(fns)))

    async def async_part() -> None:
        for lib in LIBS:
            init_redis(lib, url, with_async=True)
        aops = pivot({lib: async_ops(lib, "r") for lib in LIBS})
        for fns in aops.values():
            for fn in fns.values():
                await fn()  # connect, and fill the cache
        for op, fns in aops.items():
            log(f"redis async {op} ...")
            rts = await rts_async(fns)
            values = await compare_async(fns, prof)
            rows.append(Row("Redis, 1 process", f"{op} (async)", "op", values, rts))

    asyncio.run(async_part())
    order = ["cached hit (sync)", "cached hit (async)", "lock acquire+release (sync)"]
    order += ["lock acquire+release (async)", "pool acquire+release (sync)"]
    return sorted(rows, key=lambda r: order.index(r.name))


# -- Redis, contending processes on one pool ----------------------------------------------------
def _contention_worker(
    lib: str, url: str, key: str, max_size: int, duration: float, barrier: Any, results: Any
) -> None:
    init_redis(lib, url)
    m, full = MODS[lib], POOL_FULL[lib]
    with m.pool(key, max_size=max_size):  # connect before the clock starts
        pass
    barrier.wait()
    ok = failed = 0
    start = time.perf_counter()
    deadline = start + duration
    while time.perf_counter() < deadline:
        try:
            with m.pool(key, max_size=max_size):
                pass
        except full:
            failed += 1  # retried: only successful cycles count
        else:
            ok += 1
    results.put((ok, failed, time.perf_counter() - start))


def contention(lib: str, url: str, prof: Profile) -> tuple[float, int]:
    """Successful acquire+release cycles per second, summed over ``prof.procs`` processes."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(prof.procs + 1), ctx.Queue()
    key = f"c-pool-{lib}"
    procs = [
        ctx.Process(
            target=_contention_worker,
            args=(lib, url, key, prof.procs, prof.contention_s, barrier, results),
        )
        for _ in range(prof.procs)
    ]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    out = [results.get(timeout=prof.contention_s + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    rate = sum(ok / elapsed for ok, _, elapsed in out)
    return rate, sum(failed for _, failed, _ in out)


def bench_contention(url: str, prof: Profile) -> Row:
    rates: dict[str, list[float]] = {lib: [] for lib in LIBS}
    failures = dict.fromkeys(LIBS, 0)
    for i in range(prof.contention_runs):
        for lib in LIBS[:: 1 if i % 2 == 0 else -1]:
            log(f"redis pool, {prof.procs} processes, {lib} ...")
            rate, failed = contention(lib, url, prof)
            rates[lib].append(rate)
            failures[lib] += failed
    values = {lib: statistics.median(r) for lib, r in rates.items()}
    note = ", ".join(f"{lib} {failures[lib]:,}" for lib in LIBS)
    return Row(
        f"Redis, {prof.procs} processes",
        f"pool acquire+release, max_size={prof.procs}, total",
        "rate",
        values,
        note=f"CachifyPoolFullError raised (retried, not counted): {note}",
    )


# -- Redis, lock hand-over latency ---------------------------------------------------------------
def _wait_and_take(m: Any, key: str, started: threading.Event, acquired_at: list[float]) -> None:
    waiter = m.lock(key, nowait=False, timeout=60)
    started.set()
    with waiter:
        acquired_at.append(time.perf_counter())


def handovers(lib: str, n: int) -> list[float]:
    """Release -> the waiting thread holds, over ``n`` hand-overs (two threads, own lock objects).

    The waiter is already blocked in ``with lock(nowait=False)`` when the holder releases; the
    release comes 30-130 ms after the waiter started, at a random phase of any polling cycle.
    """
    m, key, rng = MODS[lib], "handover", random.Random(1)
    latencies = []
    for _ in range(n):
        holder = m.lock(key)
        holder.__enter__()
        started, acquired_at = threading.Event(), []
        thread = threading.Thread(target=_wait_and_take, args=(m, key, started, acquired_at))
        thread.start()
        started.wait()
        time.sleep(rng.uniform(0.03, 0.13))
        released_at = time.perf_counter()
        holder.__exit__(None, None, None)
        thread.join(timeout=60)
        latencies.append(acquired_at[0] - released_at)
    return latencies


def bench_handover(url: str, prof: Profile) -> list[Row]:
    p50, p95 = {}, {}
    for lib in LIBS:
        log(f"redis lock hand-over, {lib} ...")
        init_redis(lib, url)
        handovers(lib, 2)  # connections for both threads
        lat = handovers(lib, prof.handovers)
        cuts = statistics.quantiles(lat, n=20, method="inclusive")
        p50[lib], p95[lib] = statistics.median(lat), cuts[18]
    section = "Redis, lock hand-over"
    name = f"release → waiter holds, {prof.handovers} hand-overs"
    return [Row(section, f"{name}, p50", "latency", p50), Row(section, f"{name}, p95", "latency", p95)]


# -- in memory ----------------------------------------------------------------------------------
def bench_memory(prof: Profile) -> list[Row]:
    pyc.init_cachify()
    cfy.init_cachify()
    rows = []
    for op, fns in pivot({lib: sync_ops(lib, "m") for lib in LIBS}).items():
        log(f"memory {op} ...")
        rows.append(Row("In memory (init_cachify())", f"{op} (sync)", "op", compare_sync(fns, prof)))
    return rows


# -- server, machine, report --------------------------------------------------------------------
@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    try:
        from tests.servers import redis_url_or_private
    except ImportError as exc:
        raise SystemExit(
            f"no --redis-url/REDIS_URL, and tests/servers.py cannot start one ({exc}); "
            "install the dev extras (pip install -e '.[dev,bench]') or pass --redis-url"
        ) from None
    with redis_url_or_private(url) as found:
        yield found


def delete_keys(url: str) -> None:
    client = redis.Redis.from_url(url)
    for prefix in PREFIX.values():
        batch = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if batch:
            client.delete(*batch)
    client.close()


def cachify_source() -> str:
    """Where the measured cachify_core comes from: its git commit, and whether it has local edits."""
    import subprocess

    src = Path(cfy.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(src)
    return f"git {commit}{' + uncommitted changes' if dirty else ''}"


def machine(url: str) -> str:
    info = redis.Redis.from_url(url).info("server")
    server = f"{'Valkey' if 'valkey_version' in info else 'Redis'} {info.get('redis_version', '?')}"
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    from redis.utils import HIREDIS_AVAILABLE

    return (
        f"{platform.python_implementation()} {platform.python_version()}, {server} on "
        f"{'loopback' if '127.0.0.1' in url or 'localhost' in url else url}, "
        f"redis-py {redis.__version__}{' + hiredis' if HIREDIS_AVAILABLE else ''}, "
        f"py-cachify {importlib.metadata.version('py-cachify')}, cachify {cfy.__version__} ({cachify_source()}), "
        f"{usable} CPUs usable ({os.cpu_count()} total): {cpu}, {platform.system()} {platform.machine()}"
    )


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| Benchmark | RT/op (py-cachify / cachify) | py-cachify | cachify | cachify / py-cachify |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.section}: {r.name} | {r.rt_cell()} | {r.cell('py-cachify')} | {r.cell('cachify')} "
            f"| **{r.ratio:,.2f}x** |"
        )
    return lines


def targets(rows: list[Row]) -> list[str]:
    by_name = {f"{r.section}: {r.name}": r for r in rows}

    def find(section: str, name: str) -> Row:
        return next(r for key, r in by_name.items() if key.startswith(section) and name in key)

    checks: list[tuple[str, float, float, str]] = []  # (what, value, threshold, unit)
    checks.append(("pool, 1 process ≥ 4x", find("Redis, 1", "pool").ratio, 4.0, "x"))
    checks.append(("pool, 4 contending processes ≥ 8x", find("Redis, 4", "pool").ratio, 8.0, "x"))
    for r in rows:
        if r.section == "Redis, 1 process" and "pool" not in r.name:
            checks.append((f"Redis {r.name} no slower", r.ratio, 1.0, "x"))
        if r.section.startswith("In memory"):
            checks.append((f"in-memory {r.name} no slower", r.ratio, 1.0, "x"))
    lines = ["", "| Target | Measured | Met |", "|---|---|---|"]
    p50 = find("Redis, lock hand-over", "p50").values["cachify"] * 1e3
    lines.append(f"| lock hand-over p50 < 5 ms | {p50:.2f} ms | {'yes' if p50 < 5 else '**no**'} |")
    for what, value, threshold, unit in checks:
        met = "yes" if value >= threshold else "**no**"
        if value < threshold <= value / 0.97:
            met += " (short by < 3%, within run-to-run noise)"
        lines.append(f"| {what} | {value:.2f}{unit} | {met} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="default: $REDIS_URL")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (~30 s)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the report to FILE")
    args = parser.parse_args()
    prof = QUICK if args.quick else FULL
    began = time.perf_counter()

    with redis_server(args.redis_url) as url:
        try:
            info = machine(url)
            rows = bench_redis_single(url, prof)
            rows.append(bench_contention(url, prof))
            rows += bench_handover(url, prof)
            rows += bench_memory(prof)
        finally:
            delete_keys(url)

    notes = [r.note for r in rows if r.note]
    report = [
        f"Machine: {info}",
        "",
        *table(rows),
        "",
        "RT/op: Redis requests per operation, counted in the client (neither library pipelines). "
        f"Per-op times: median of {prof.rounds} interleaved rounds per library; the {prof.procs}-process "
        f"row: median of {prof.contention_runs} run(s) of {prof.contention_s:g} s per library. "
        "Ratios > 1 mean cachify is faster (throughput ratio, i.e. py-cachify time / cachify time).",
        *(f"{n}." for n in notes),
        *targets(rows),
    ]
    text = "\n".join(report) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    log(f"done in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
