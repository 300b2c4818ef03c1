"""How exactly the ``rate_*`` task options hold a rate, on real workers, measured from outside.

    python benchmarks/rate_accuracy.py [--quick] [--json out.json] [--frameworks celery,taskiq]

Per framework, two worker processes (4 slots each) run two measurements, one after the other:

- **one bound**: N tasks (500; quick 120) of ``rated(i)``, declared with ``rate_key="rated"`` and
  ``rate="20/s"`` (burst 20, the default), all sent at once. Every cachify option but the rate
  is at its default: a run the limit does not admit now is parked as a timed entry and published
  again by a worker's sweep at its time.
- **per tenant + global**: M tasks (180; quick 60) of ``tenant(i, tenant)`` spread over three
  tenants, declared with ``rate_keys=[("geo-{tenant}", "5/s"), ("geo-all", "12/s")]``.

From the bodies' own start and end records (:mod:`apps.observe`, read back outside the workers):
the most body starts in any 1-second window (half-open, anchored anywhere), against the GCRA
bound: a limit of ``count`` per period with burst ``b`` admits at most ``count + b - 1`` calls
of cost 1 in any window of one period (``2 x count - 1`` with the default burst); the makespan
(first body start → last body end) against the ideal (the last admission cannot come before
``(N - burst) / rate`` after the first); the retries spent (the framework's own retry counter of
every execution: Celery ``request.retries``, Dramatiq's ``retries`` option, Taskiq's ``_retries``
label); lost (sent, never completed) and duplicated (completed more than once); and the store's
round trips per task (``INFO stats`` of its private server).

A body starts a little after its admission (broker delivery, a free slot), and by different
amounts, so a window of starts can hold one more than the window of admissions: the run
admitted at the window's end can start sooner after its admission than the one admitted at its
beginning. The target is therefore ``count + burst`` starts in any window (one over the
admission bound shown in brackets); a count above it fails the run.

Servers: three private ``redis-server`` processes on free ports (broker, store, observations),
stopped at the end. Progress goes to stderr, the tables to stdout, everything to ``--json``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: harness, apps

from apps.config import AppConfig
from harness import stats
from harness.frameworks import FRAMEWORKS, describe
from harness.servers import redis_servers
from harness.workers import WorkerSet

PROCESSES = 2
SLOTS_PER_PROCESS = 4
#: One bound: ``rate_key`` + ``rate``.
RATE_COUNT = 20
RATED_OPTIONS: dict[str, object] = {"rate_key": "rated", "rate": f"{RATE_COUNT}/s"}
#: Per tenant + global: ``rate_keys``, and the tenants the tasks are spread over (i % 3).
TENANTS = ("t0", "t1", "t2")
TENANT_COUNT, GLOBAL_COUNT = 5, 12
TENANT_OPTIONS: dict[str, object] = {
    "rate_keys": [["geo-{tenant}", f"{TENANT_COUNT}/s"], ["geo-all", f"{GLOBAL_COUNT}/s"]]
}
#: The tenant task's indices start here (the two measurements share one record list).
TENANT_BASE = 100_000
#: The issue's target for the one-bound makespan at 500 tasks, and its tolerance.
TARGET_S, TOLERANCE = 25.0, 0.05
WINDOW_S = 1.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def gcra_bound(count: int, burst: int) -> int:
    """Most calls of cost 1 a limit of ``count`` per period admits in any window of one period."""
    return count + burst - 1


def max_in_window(times: Sequence[float], window_s: float = WINDOW_S) -> tuple[int, float]:
    """The most of ``times`` inside one half-open window ``[a, a + window_s)``, anchored anywhere
    (the best anchors are the times themselves), and the first such ``a``."""
    ordered = sorted(times)
    best, at = 0, 0.0
    for k, t in enumerate(ordered):
        inside = bisect.bisect_left(ordered, t + window_s) - k
        if inside > best:
            best, at = inside, t
    return best, at


@dataclass(frozen=True)
class Run:
    """One execution as the body recorded it."""

    i: int
    start: float
    end: float | None
    retries: int | None  #: None: no attempt record (should not happen for these tasks)
    tag: str


def read_runs(obs: redis.Redis, run: str) -> list[Run]:
    ends: dict[str, float] = {}
    for raw in obs.lrange(f"{run}:end", 0, -1):
        _, t, uid = raw.decode().split()
        ends[uid] = float(t)
    attempts: dict[str, tuple[int, str]] = {}
    for raw in obs.lrange(f"{run}:attempt", 0, -1):
        uid, retries, tag = raw.decode().split()
        attempts[uid] = (int(retries), tag)
    out = []
    for raw in obs.lrange(f"{run}:start", 0, -1):
        i, t, _, _, uid = raw.decode().split()
        retries, tag = attempts.get(uid, (None, "?"))
        out.append(Run(int(i), float(t), ends.get(uid), retries, tag))
    return out


@dataclass
class Row:
    framework: str
    case: str  #: "one bound" or "per tenant + global"
    rate: str
    tasks: int
    completed: int
    timed_out: bool
    lost: int
    duplicated: int
    executions: int
    retries_spent: int  #: the sum of the retry counters of every execution
    executions_without_counter: int
    #: the most starts in any 1 s window: "global" (every start) and each tenant's
    max_per_window: dict[str, int]
    #: where that window begins, in seconds after the first start
    peak_window_at_s: dict[str, float]
    bound_per_window: dict[str, int]
    makespan_s: float
    ideal_s: float
    store_round_trips_per_task: float
    store_commands_per_task: float
    store_top_commands: dict[str, float] = field(default_factory=dict)
    #: every start, in seconds after the first, with its tag (the JSON's raw data)
    starts: list[tuple[float, str]] = field(default_factory=list)

    @property
    def within_bound(self) -> bool:
        """No window of starts above ``count + burst``: the limiter's own bound on admissions
        (``count + burst - 1``, the figure in brackets) plus one, for the start of a run lagging
        its admission by a delivery delay that differs from run to run."""
        return all(self.max_per_window[k] <= self.bound_per_window[k] + 1 for k in self.bound_per_window)


def analyse(
    framework: str, case: str, rate: str, runs: list[Run], sent: Sequence[int], finished: bool,
    bounds: dict[str, int], ideal_s: float, rt: stats.PerTask, until: float,
) -> Row:  # fmt: skip
    sent_set = set(sent)
    mine = [r for r in runs if r.i in sent_set]
    ends: dict[int, int] = {}
    for r in mine:
        if r.end is not None:
            ends[r.i] = ends.get(r.i, 0) + 1
    starts = [r.start for r in mine]
    first = min(starts, default=0.0)
    found = {"global": max_in_window(starts)}
    for tag in sorted({r.tag for r in mine} - {"-"}):
        found[tag] = max_in_window([r.start for r in mine if r.tag == tag])
    windows = {k: v[0] for k, v in found.items()}
    last = max((r.end for r in mine if r.end is not None), default=first)
    makespan = last - first if finished else max(last, until) - first
    return Row(
        framework=framework,
        case=case,
        rate=rate,
        tasks=len(sent),
        completed=len(ends),
        timed_out=not finished,
        lost=len(sent_set - set(ends)),
        duplicated=sum(1 for n in ends.values() if n > 1),
        executions=len(mine),
        retries_spent=sum(r.retries or 0 for r in mine),
        executions_without_counter=sum(1 for r in mine if r.retries is None),
        max_per_window=windows,
        peak_window_at_s={k: round(v[1] - first, 3) for k, v in found.items()},
        bound_per_window=bounds,
        makespan_s=makespan,
        ideal_s=ideal_s,
        store_round_trips_per_task=rt.round_trips,
        store_commands_per_task=rt.commands,
        store_top_commands=rt.top,
        starts=sorted((round(r.start - first, 4), r.tag) for r in mine),
    )


def measure(
    framework: str, n: int, m: int, body_s: float, timeout_s: float, urls: dict[str, str], logdir: Path,
    log_level: str, run: str,
) -> list[Row]:  # fmt: skip
    config = AppConfig(
        run=run,
        broker_url=urls["broker"],
        store_url=urls["store"],
        observe_url=urls["observe"],
        pool_size=1,  # the gated task is not used here
        body_s=body_s,
        rated_options=dict(RATED_OPTIONS),
        tenant_options=dict(TENANT_OPTIONS),
    )
    workers = WorkerSet(FRAMEWORKS[framework], config, [SLOTS_PER_PROCESS] * PROCESSES, logdir, log_level)
    rows: list[Row] = []
    obs = redis.Redis.from_url(urls["observe"])
    try:
        workers.start()
        # One bound.
        log(f"{framework}: {n} tasks at {RATED_OPTIONS['rate']} ...")
        before = stats.snapshot(urls["store"])
        sent = workers.send("rated", range(n))
        finished = workers.wait_done(list(sent.at), timeout_s)
        after = stats.snapshot(urls["store"])
        until = time.time()
        rows.append(
            analyse(
                framework,
                "one bound",
                str(RATED_OPTIONS["rate"]),
                read_runs(obs, run),
                list(sent.at),
                finished,
                {"global": gcra_bound(RATE_COUNT, RATE_COUNT)},
                max(0, n - RATE_COUNT) / RATE_COUNT,
                stats.per_task(before, after, n),
                until,
            )
        )
        log(
            f"  {rows[-1].completed}/{n} in {rows[-1].makespan_s:.2f}s, peak {rows[-1].max_per_window} "
            f"at {rows[-1].peak_window_at_s}"
        )
        # Per tenant + global.
        log(
            f"{framework}: {m} tasks over {len(TENANTS)} tenants at {TENANT_COUNT}/s each, {GLOBAL_COUNT}/s in all ..."
        )
        indices = range(TENANT_BASE, TENANT_BASE + m)
        before = stats.snapshot(urls["store"])
        sent = workers.send("tenant", indices, args_of=lambda i: (TENANTS[i % len(TENANTS)],))
        finished = workers.wait_done(list(sent.at), timeout_s)
        after = stats.snapshot(urls["store"])
        until = time.time()
        bounds = {"global": gcra_bound(GLOBAL_COUNT, GLOBAL_COUNT)}
        bounds.update({t: gcra_bound(TENANT_COUNT, TENANT_COUNT) for t in TENANTS})
        per_tenant = -(-m // len(TENANTS))
        ideal = max(max(0, m - GLOBAL_COUNT) / GLOBAL_COUNT, max(0, per_tenant - TENANT_COUNT) / TENANT_COUNT)
        rows.append(
            analyse(
                framework,
                "per tenant + global",
                f"{TENANT_COUNT}/s per tenant, {GLOBAL_COUNT}/s in all",
                read_runs(obs, run),
                list(sent.at),
                finished,
                bounds,
                ideal,
                stats.per_task(before, after, m),
                until,
            )
        )
        log(
            f"  {rows[-1].completed}/{m} in {rows[-1].makespan_s:.2f}s, peak {rows[-1].max_per_window} "
            f"at {rows[-1].peak_window_at_s}"
        )
    finally:
        workers.stop(grace_s=5)
        obs.close()
    return rows


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| framework | case | tasks | done | max starts in any 1 s (bound) | makespan s | ideal s "
        "| retries spent | lost | duplicated | store RT / task |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        done = f"{r.completed}/{r.tasks}" + (" (timed out)" if r.timed_out else "")
        peaks = ", ".join(
            f"{k} {r.max_per_window.get(k, 0)} ({b})"
            if k != "global" or len(r.bound_per_window) == 1
            else f"all {r.max_per_window.get(k, 0)} ({b})"
            for k, b in sorted(r.bound_per_window.items(), key=lambda kv: (kv[0] != "global", kv[0]))
        )
        retries = f"{r.retries_spent}" + (
            f" ({r.executions_without_counter} unread)" if r.executions_without_counter else ""
        )
        lines.append(
            f"| {r.framework} | {r.case} ({r.rate}) | {r.tasks} | {done} | {peaks} | {r.makespan_s:.2f} | "
            f"{r.ideal_s:.2f} | {retries} | {r.lost} | {r.duplicated} | {r.store_round_trips_per_task:.1f} |"
        )
    return lines


def targets(rows: list[Row], n: int) -> list[str]:
    lines = []
    for r in rows:
        checks = [
            ("at most count + burst starts in every 1 s window", r.within_bound),
            ("no retry spent", r.retries_spent == 0 and r.executions_without_counter == 0),
            ("none lost", r.lost == 0 and not r.timed_out),
            ("none duplicated", r.duplicated == 0),
        ]
        if r.case == "one bound" and n == 500:
            lo, hi = TARGET_S * (1 - TOLERANCE), TARGET_S * (1 + TOLERANCE)
            checks.append((f"makespan {lo:.2f}-{hi:.2f} s", lo <= r.makespan_s <= hi))
        missed = [name for name, ok in checks if not ok]
        lines.append(
            f"- {r.framework}, {r.case}: " + ("all met" if not missed else "MISSED: " + "; ".join(missed))
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI form: 120 + 60 tasks")
    parser.add_argument(
        "-n", "--tasks", type=int, help="tasks of the one-bound case (default 500; quick 120)"
    )
    parser.add_argument(
        "--tenant-tasks", type=int, help="tasks of the per-tenant case (default 180; quick 60)"
    )
    parser.add_argument("--frameworks", default="celery,dramatiq,taskiq")
    parser.add_argument("--body-s", type=float, default=0.02, help="seconds each task sleeps (default 0.02)")
    parser.add_argument(
        "--timeout-s", type=float, help="longest wait per measurement (default 120; quick 60)"
    )
    parser.add_argument("--json", type=Path, help="write the rows (and the machine) to this file")
    parser.add_argument("--log-level", default="WARNING", help="worker log level (default WARNING)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs (path printed)")
    args = parser.parse_args()
    n = args.tasks or (120 if args.quick else 500)
    m = args.tenant_tasks or (60 if args.quick else 180)
    timeout_s = args.timeout_s or (60.0 if args.quick else 120.0)
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    for f in frameworks:
        if f not in FRAMEWORKS:
            parser.error(f"--frameworks: unknown {f!r} (celery, dramatiq, taskiq)")
    logdir = Path(tempfile.mkdtemp(prefix="cfy-rate-acc-"))
    rows: list[Row] = []
    failures: list[str] = []
    with redis_servers(("broker", False), ("store", False), ("observe", False)) as (broker, store, observe):
        urls = {"broker": broker.url(0), "store": store.url(0), "observe": observe.url(0)}
        for count, framework in enumerate(frameworks, 1):
            try:
                rows.extend(
                    measure(framework, n, m, args.body_s, timeout_s, urls, logdir, args.log_level,
                            f"{os.getpid()}-{count}")
                )  # fmt: skip
            except Exception as exc:
                failures.append(f"{framework}: {exc}")
                log(f"  FAILED: {exc}")
    machine = (
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        + ", ".join(describe(p) for p in ("celery", "dramatiq", "taskiq", "taskiq-redis", "redis"))
        + f"; {PROCESSES} worker processes x {SLOTS_PER_PROCESS} slots, bodies of {args.body_s * 1000:.0f} ms"
    )
    print(f"_{machine}. Timing on a shared machine is indicative only._\n")
    print("\n".join(table(rows)))
    print()
    print("\n".join(targets(rows, n)))
    for failure in failures:
        print(f"\nFAILED: {failure}")
    if args.json:
        payload = {"machine": machine, "rows": [asdict(r) | {"within_bound": r.within_bound} for r in rows],
                   "failures": failures}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2))
    if args.keep_logs or failures:
        log(f"worker logs: {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    missed = any(
        not (r.within_bound and r.retries_spent == 0 and r.lost == 0 and r.duplicated == 0) for r in rows
    )
    return 1 if failures or missed else 0


if __name__ == "__main__":
    sys.exit(main())
