"""How much of a pool's capacity each way of capping concurrency uses, on real workers.

    python benchmarks/pool_utilization.py [--quick] [--json out.json] [--frameworks celery,taskiq]

N tasks, each a ``time.sleep(body)`` (100 ms), go through a cap of ``max_size`` (2 and 8) on two
worker processes with twice as many slots in total as the cap (4 and 16). Capacity used =
ideal makespan (N x body / max_size) ÷ measured makespan (first body start → last body end,
from the bodies' own records). Side by side, per framework:

- ``pool_key``: cachify's ``pool_key``/``pool_max_size`` with every other option at its default:
  a full pool parks the task in its waiting room and each freed slot is handed to the oldest.
- ``backoff``: the same with ``pool_max_waiting=0``: the fallback (and the behaviour before the
  waiting room), a full pool re-publishes the task after ``pool_backoff``.
- ``limiter`` (Dramatiq): ``dramatiq.rate_limits.ConcurrentRateLimiter`` on Redis, its usual
  pattern (``RateLimitExceeded`` retried by the default ``Retries`` middleware).
- ``dedicated``: the classic workaround and the ceiling: no cap in the store, a queue of its own
  consumed by ONE worker process with exactly ``max_size`` slots.
- ``relay``: the floor of a hand-over through the broker, with no store at all: ``max_size``
  chains on the same workers as ``pool_key``; each run, its body done, sends its chain's next
  task (``i + max_size``), so every freed place waits for one publish, one delivery and one
  start, as a hand-over's slot does, and for nothing else (no admission, no release, no parking,
  no burst of newcomers). A hand-over cannot use more of the capacity than this.

Also reported: the largest FIFO inversion (how many places a task was overtaken, start order vs
send order), the peak concurrency seen by the bodies vs the cap, and the store's requests
(round trips) and commands per task: the store is a private ``redis-server`` of its own, so
``INFO stats`` deltas count exactly what the workers asked of it.

Servers: three private ``redis-server`` processes on free ports (broker, store, observations),
stopped at the end. Progress goes to stderr, the table to stdout, everything to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: harness, apps

from apps.config import AppConfig
from harness import records, stats
from harness.frameworks import FRAMEWORKS, describe
from harness.servers import redis_servers
from harness.workers import WorkerSet

#: Variants per framework, and the task each one sends.
VARIANTS: dict[str, tuple[str, ...]] = {
    "celery": ("pool_key", "backoff", "dedicated", "relay"),
    "dramatiq": ("pool_key", "backoff", "limiter", "dedicated", "relay"),
    "taskiq": ("pool_key", "backoff", "dedicated", "relay"),
}
TASK_OF = {
    "pool_key": "gated",
    "backoff": "gated",
    "limiter": "limited",
    "dedicated": "plain",
    "relay": "relay",
}
#: Framework settings of every run (``--dramatiq-worker-timeout-ms``).
FRAMEWORK_OPTIONS: dict[str, object] = {}
#: Extra options of the gated task per variant.
OPTIONS_OF: dict[str, dict[str, object]] = {"backoff": {"pool_max_waiting": 0}}
#: Worker processes of the capped variants (the dedicated queue has one, of max_size slots).
PROCESSES = 2
#: Slots in total per unit of max_size (4 slots for a cap of 2, 16 for 8).
SLOTS_PER_CAP = 2


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Row:
    framework: str
    variant: str
    max_size: int
    slots: int
    processes: int
    tasks: int
    completed: int
    timed_out: bool
    makespan_s: float
    ideal_s: float
    capacity_used: float
    peak: int
    fifo_max_inversion: int
    store_round_trips_per_task: float
    store_commands_per_task: float
    store_top_commands: dict[str, float]
    send_s: float
    #: Slot turnover: for the k-th start (k >= cap), start_k - end_(k-cap): how long a freed slot
    #: stayed idle before the next task began on it (ms, median and 95th percentile).
    slot_idle_ms_p50: float
    slot_idle_ms_p95: float


def measure(
    framework: str, variant: str, size: int, n: int, body_s: float, timeout_s: float, urls: dict[str, str],
    logdir: Path, log_level: str, run: str,
) -> Row:  # fmt: skip
    fw = FRAMEWORKS[framework]
    config = AppConfig(
        run=run,
        broker_url=urls["broker"],
        store_url=urls["store"],
        observe_url=urls["observe"],
        pool_size=size,
        body_s=body_s,
        limiter_url=urls["limiter"],
        task_options=dict(OPTIONS_OF.get(variant, {})),
        framework_options=dict(FRAMEWORK_OPTIONS),
    )
    total = size * SLOTS_PER_CAP
    layout = [size] if variant == "dedicated" else [total // PROCESSES] * PROCESSES
    workers = WorkerSet(fw, config, layout, logdir, log_level)
    try:
        workers.start()
        before = stats.snapshot(urls["store"])
        began = time.perf_counter()
        if variant == "relay":  # max_size chains: each run sends its successor
            workers.send(TASK_OF[variant], range(min(size, n)), args_of=lambda _: (n,))
        else:
            workers.send(TASK_OF[variant], range(n))
        send_s = time.perf_counter() - began
        finished = workers.wait_done(range(n), timeout_s)
        after = stats.snapshot(urls["store"])
        until = time.time()
    finally:
        workers.stop(grace_s=5)
    obs = redis.Redis.from_url(urls["observe"])
    try:
        executions = records.read(obs, run)
    finally:
        obs.close()
    a = records.analyse(executions, list(range(n)), size, body_s, until=until)
    idle_p50, idle_p95 = slot_idle_ms(executions, size)
    rt = stats.per_task(before, after, n)
    makespan = a.makespan_s if finished else max(a.makespan_s, until - a.first_start)
    # Unfinished: what the completed part used of the capacity over the time allowed.
    capacity = (a.completed * body_s / size) / makespan if makespan > 0 else 0.0
    return Row(
        framework, variant, size, sum(layout), len(layout), n, a.completed, not finished, makespan,
        a.ideal_s, capacity, a.peak, a.fifo_max_inversion, rt.round_trips, rt.commands, rt.top, send_s,
        idle_p50, idle_p95,
    )  # fmt: skip


def slot_idle_ms(executions: list[records.Execution], cap: int) -> tuple[float, float]:
    """Median and 95th percentile of start_k - end_(k-cap) over completed runs, in ms."""
    done = [e for e in executions if e.end is not None]
    starts = sorted(e.start for e in done)
    ends = sorted(e.end for e in done if e.end is not None)
    gaps = sorted(max(0.0, starts[k] - ends[k - cap]) * 1000 for k in range(cap, len(starts)))
    if not gaps:
        return 0.0, 0.0
    return gaps[len(gaps) // 2], gaps[min(len(gaps) - 1, int(len(gaps) * 0.95))]


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| framework | cap | variant | slots (processes) | done | makespan s | ideal s | capacity used "
        "| peak / cap | FIFO max inversion | slot idle ms p50 / p95 | store RT / task | store cmds / task |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        done = f"{r.completed}/{r.tasks}" + (" (timed out)" if r.timed_out else "")
        lines.append(
            f"| {r.framework} | {r.max_size} | {r.variant} | {r.slots} ({r.processes}) | {done} | "
            f"{r.makespan_s:.2f} | {r.ideal_s:.2f} | {r.capacity_used:.0%} | {r.peak} / {r.max_size} | "
            f"{r.fifo_max_inversion} | {r.slot_idle_ms_p50:.1f} / {r.slot_idle_ms_p95:.1f} | "
            f"{r.store_round_trips_per_task:.1f} | {r.store_commands_per_task:.1f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI form: N=60, cap 2 only")
    parser.add_argument("-n", "--tasks", type=int, help="tasks per measurement (default 300; quick 60)")
    parser.add_argument("--sizes", help="comma-separated caps (default 2,8; quick 2)")
    parser.add_argument("--frameworks", default="celery,dramatiq,taskiq")
    parser.add_argument(
        "--variants", help="comma-separated subset of pool_key,backoff,limiter,dedicated,relay"
    )
    parser.add_argument("--body-s", type=float, default=0.1, help="seconds each task sleeps (default 0.1)")
    parser.add_argument(
        "--timeout-s", type=float, help="longest wait per measurement (default 300; quick 90)"
    )
    parser.add_argument(
        "--dramatiq-worker-timeout-ms",
        type=int,
        help="dramatiq_worker_timeout (env): its consumers' longest sleep between polls of an empty queue "
        "(Dramatiq's default 1000 ms); a freed slot's hand-over waits for the next poll",
    )
    parser.add_argument(
        "--celery-prefetch-multiplier",
        type=int,
        help="worker_prefetch_multiplier of the Celery workers (Celery's default 4): messages each "
        "worker takes ahead of its free slots, which a hand-over waits behind during the start-up burst",
    )
    parser.add_argument("--json", type=Path, help="write the rows (and the machine) to this file")
    parser.add_argument("--log-level", default="WARNING", help="worker log level (default WARNING)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs (path printed)")
    args = parser.parse_args()
    if args.dramatiq_worker_timeout_ms is not None:
        FRAMEWORK_OPTIONS["worker_timeout_ms"] = args.dramatiq_worker_timeout_ms
    if args.celery_prefetch_multiplier is not None:
        FRAMEWORK_OPTIONS["prefetch_multiplier"] = args.celery_prefetch_multiplier
    n = args.tasks or (60 if args.quick else 300)
    sizes = [int(s) for s in (args.sizes or ("2" if args.quick else "2,8")).split(",")]
    timeout_s = args.timeout_s or (90.0 if args.quick else 300.0)
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    for f in frameworks:
        if f not in FRAMEWORKS:
            parser.error(f"--frameworks: unknown {f!r} (celery, dramatiq, taskiq)")
    wanted = set(args.variants.split(",")) if args.variants else None
    logdir = Path(tempfile.mkdtemp(prefix="cfy-pool-util-"))
    rows: list[Row] = []
    failures: list[str] = []
    with redis_servers(("broker", False), ("store", False), ("observe", False)) as (broker, store, observe):
        urls = {
            "broker": broker.url(0),
            "store": store.url(0),
            "limiter": store.url(1),  # Dramatiq's limiter keeps its counter in the store server
            "observe": observe.url(0),
        }
        count = 0
        for framework in frameworks:
            for size in sizes:
                for variant in VARIANTS[framework]:
                    if wanted is not None and variant not in wanted:
                        continue
                    count += 1
                    run = f"{os.getpid()}-{count}"
                    log(f"{framework}, cap {size}, {variant}: {n} tasks x {args.body_s * 1000:.0f} ms ...")
                    try:
                        row = measure(
                            framework,
                            variant,
                            size,
                            n,
                            args.body_s,
                            timeout_s,
                            urls,
                            logdir,
                            args.log_level,
                            run,
                        )
                    except Exception as exc:
                        failures.append(f"{framework} cap {size} {variant}: {exc}")
                        log(f"  FAILED: {exc}")
                        continue
                    rows.append(row)
                    log(
                        f"  {row.completed}/{n} in {row.makespan_s:.2f}s: {row.capacity_used:.0%} of capacity"
                    )
    machine = (
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        + ", ".join(describe(p) for p in ("celery", "dramatiq", "taskiq", "taskiq-redis", "redis"))
        + f"; {n} tasks x {args.body_s * 1000:.0f} ms"
    )
    print(f"_{machine}. Timing on a shared machine is indicative only._\n")
    print("\n".join(table(rows)))
    for failure in failures:
        print(f"\nFAILED: {failure}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": [asdict(r) for r in rows],
                                         "failures": failures}, indent=2))  # fmt: skip
    if args.keep_logs or failures:
        log(f"worker logs: {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
