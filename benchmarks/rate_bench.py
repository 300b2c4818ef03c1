"""cachify's rate limiter vs ``limits`` and dramatiq's, side by side in one run on the same Redis.

    python benchmarks/rate_bench.py [--redis-url URL] [--quick] [--procs N] [--markdown out.md]

Limiters (each at ``RATE`` calls per second on one key):

* cachify ``rate_limit(key, "N/s", burst=1, nowait=True)`` (GCRA, strict spacing), and with its
  default ``burst=N`` (which by design admits up to N + N - 1 in a 1 s window);
* limits 5 ``MovingWindowRateLimiter`` and ``SlidingWindowCounterRateLimiter`` on ``RedisStorage``;
* dramatiq ``BucketRateLimiter(limit=N, bucket=1000)`` and ``WindowRateLimiter(limit=N, window=1)``
  on ``dramatiq.rate_limits.backends.RedisBackend``.

Measured per limiter:

* **checks/s, 1 process**: a tight loop of non-waiting checks on a limited key (most are refused,
  as under real pressure), in rounds alternating between the limiters; the median round;
* **RT/check**: requests redis-py sent, counted on ``Connection.send_packed_command`` during 50
  admitted checks (a limit that is never reached) and 50 refused ones (a limit used up); a
  pipeline is one request;
* **checks/s, P processes** and **peak in any 1 s window**: ``--procs`` spawned processes loop
  for ``load_s`` seconds; each admission is recorded as the interval [time before the check,
  time after the answer], and the peak counts admissions *certainly* inside a window of 1 s
  anchored anywhere (``tests/windows.py``) — a lower bound, so a reported over-admission is
  real; **over** = peak - N.

Redis: ``--redis-url``, else ``REDIS_URL``, else a private server (``tests/servers.py``). Keys
are under ``RBENCH-<pid>-`` and deleted afterwards; nothing is flushed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import redis  # noqa: E402
from harness.requests import counting_requests  # noqa: E402

from tests.servers import redis_url_or_private  # noqa: E402
from tests.windows import certain_peak  # noqa: E402

#: The limit every limiter enforces, calls per second: low enough that P processes on 2 cores
#: are refused most of the time (the regime a limiter exists for), high enough to count well.
RATE = 200
PREFIX = f"RBENCH-{os.getpid()}-"
LIMITERS = (
    "cachify GCRA burst=1",
    "cachify GCRA burst=N",
    "limits MovingWindow",
    "limits SlidingWindowCounter",
    "dramatiq Bucket",
    "dramatiq Window",
)
PEERS = LIMITERS[2:]
N_COUNT = 50


@dataclass(frozen=True)
class Profile:
    rounds: int  # single-process rounds per limiter (the median is kept)
    round_s: float
    load_s: float  # length of one multi-process run


FULL = Profile(rounds=9, round_s=0.2, load_s=3.0)
QUICK = Profile(rounds=3, round_s=0.1, load_s=1.5)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- one limiter, as a check() -> bool ---------------------------------------------------------------
def make_check(name: str, url: str, prefix: str, key: str, rate: int) -> Callable[[], bool]:
    """A non-waiting check of limiter ``name`` on ``key``: True if admitted (and counted)."""
    if name.startswith("cachify"):
        import cachify_core as cfy

        c = cfy.init_cachify(url=url, prefix=prefix, is_global=False)
        burst = 1 if name.endswith("burst=1") else None
        limiter = c.rate_limit(key, f"{rate}/s", burst=burst, nowait=True)

        def cachify_check() -> bool:
            try:
                limiter.acquire()
            except cfy.CachifyRateLimitedError:
                return False
            return True

        return cachify_check
    if name.startswith("limits"):
        from limits import RateLimitItemPerSecond, storage, strategies

        store = storage.RedisStorage(url, key_prefix=prefix + "limits")
        strategy = (
            strategies.MovingWindowRateLimiter(store)
            if name.endswith("MovingWindow")
            else strategies.SlidingWindowCounterRateLimiter(store)
        )
        item = RateLimitItemPerSecond(rate)
        return lambda: strategy.hit(item, key)
    from dramatiq.rate_limits import BucketRateLimiter, WindowRateLimiter
    from dramatiq.rate_limits.backends import RedisBackend

    backend = RedisBackend(url=url)
    dramatiq_limiter: Any = (
        BucketRateLimiter(backend, prefix + key, limit=rate, bucket=1000)
        if name.endswith("Bucket")
        else WindowRateLimiter(backend, prefix + key, limit=rate, window=1)
    )

    def dramatiq_check() -> bool:
        with dramatiq_limiter.acquire(raise_on_failure=False) as acquired:
            return bool(acquired)

    return dramatiq_check


# -- round trips --------------------------------------------------------------------------------------
def round_trips(name: str, url: str) -> tuple[float, float]:
    """Requests per admitted check and per refused check."""
    admitted = make_check(name, url, PREFIX, f"rt-ok-{name}", 1_000_000)
    refused = make_check(name, url, PREFIX, f"rt-no-{name}", 1)
    admitted()  # connect, load scripts
    refused()
    out = []
    for check, want in ((admitted, True), (refused, False)):
        # fixed-window limiters start a new window every second: a pass that saw one is redone
        for _ in range(5):
            with counting_requests() as counter:
                results = [check() for _ in range(N_COUNT)]
            if all(r is want for r in results):
                break
        else:
            raise AssertionError(f"{name}: expected every check to be {want}")
        out.append(counter[0] / N_COUNT)
    return out[0], out[1]


# -- throughput and admissions ------------------------------------------------------------------------
def _run_for(check: Callable[[], bool], duration_s: float) -> float:
    n = 0
    start = time.perf_counter()
    deadline = start + duration_s
    while time.perf_counter() < deadline:
        for _ in range(50):
            check()
        n += 50
    return n / (time.perf_counter() - start)


def single(url: str, prof: Profile) -> dict[str, float]:
    """Checks per second of each limiter in this process: ``prof.rounds`` short rounds, the
    limiters alternating round by round (ABBA), so drift on a shared machine hits all alike."""
    checks = {name: make_check(name, url, PREFIX, f"single-{name}", RATE) for name in LIMITERS}
    for check in checks.values():
        _run_for(check, prof.round_s)  # warm up
    samples: dict[str, list[float]] = {name: [] for name in LIMITERS}
    for r in range(prof.rounds):
        for name in LIMITERS[:: 1 if r % 2 == 0 else -1]:
            samples[name].append(_run_for(checks[name], prof.round_s))
    return {name: statistics.median(s) for name, s in samples.items()}


def _load_worker(
    name: str, url: str, prefix: str, key: str, duration_s: float, barrier: Any, results: Any
) -> None:
    check = make_check(name, url, prefix, key, RATE)
    with contextlib.suppress(Exception):
        check()  # connect (its admission, before the start line, is not counted)
    barrier.wait(120)
    checks = 0
    admitted: list[tuple[float, float]] = []
    clock = time.time
    stop = time.monotonic() + duration_s
    while time.monotonic() < stop:
        t0 = clock()
        ok = check()
        checks += 1
        if ok:
            admitted.append((t0, clock()))
    results.put((checks, admitted))


@dataclass
class Load:
    checks_per_s: float
    admitted_per_s: float
    peak: int


def load(name: str, url: str, procs: int, prof: Profile) -> Load:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(procs + 1), ctx.Queue()
    key = f"load-{name}"
    workers = [
        ctx.Process(
            target=_load_worker, args=(name, url, PREFIX, key, prof.load_s, barrier, results), daemon=True
        )
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    try:
        barrier.wait(120)
        started = time.time()
        out = [results.get(timeout=prof.load_s + 120) for _ in workers]
        for w in workers:
            w.join(30)
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
                w.join(5)
    # admissions of the first window after the start line may follow admissions made while
    # connecting (before it): count only those, as a limiter with a key fresh at the start line
    intervals = [iv for _, adm in out for iv in adm if iv[0] >= started]
    elapsed = prof.load_s
    return Load(
        sum(c for c, _ in out) / elapsed,
        len(intervals) / elapsed,
        certain_peak(intervals, 1.0),
    )


# -- report -------------------------------------------------------------------------------------------
def delete_keys(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"*{PREFIX}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


def machine(url: str, procs: int) -> str:
    client = redis.Redis.from_url(url)
    try:
        server = client.info("server").get("redis_version", "?")
    finally:
        client.close()
    versions = ", ".join(
        f"{pkg} {importlib.metadata.version(pkg)}" for pkg in ("limits", "dramatiq", "redis", "hiredis")
    )
    return (
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, "
        f"redis-server {server} on {url.split('@')[-1]}, {versions}; N = {RATE}/s, {procs} processes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--procs", type=int, default=3)
    parser.add_argument("--markdown")
    args = parser.parse_args()
    prof = QUICK if args.quick else FULL
    if not 2 <= args.procs <= 8:
        raise SystemExit("--procs must be between 2 and 8")
    with redis_url_or_private(args.redis_url) as url:
        try:
            rows: dict[str, dict[str, Any]] = {name: {} for name in LIMITERS}
            log("round trips ...")
            for name in LIMITERS:
                rows[name]["rt"] = round_trips(name, url)
            log("1 process ...")
            for name, rate in single(url, prof).items():
                rows[name]["single"] = rate
            for name in LIMITERS:
                log(f"{name}: {args.procs} processes ...")
                rows[name]["load"] = load(name, url, args.procs, prof)
            header = machine(url, args.procs)
        finally:
            delete_keys(url)
    best_single = max(rows[p]["single"] for p in PEERS)
    best_load = max(rows[p]["load"].checks_per_s for p in PEERS)
    lines = [
        f"_{header}_",
        "",
        "| limiter | RT/check admitted / refused | checks/s, 1 proc | vs fastest peer | "
        f"checks/s, {args.procs} procs | vs fastest peer | admitted/s | peak in any 1 s | over N |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        res: Load = row["load"]
        ok_rt, no_rt = row["rt"]
        lines.append(
            f"| {name} | {ok_rt:.2f} / {no_rt:.2f} | {row['single']:,.0f} | "
            f"{row['single'] / best_single:.2f}x | {res.checks_per_s:,.0f} | "
            f"{res.checks_per_s / best_load:.2f}x | {res.admitted_per_s:,.0f} | {res.peak} | "
            f"{max(0, res.peak - RATE)} |"
        )
    report = "\n".join(lines)
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
