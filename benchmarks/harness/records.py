"""What the task bodies recorded (:mod:`apps.observe`), turned into numbers.

Concurrency is counted from the bodies' own start/end records. A body's interval lies inside
the time its slot was held (taken before the start record, released after the end record), so
its concurrency can only be above the cap if the cap was broken. A body killed mid-run has no
end record: its interval ends when its process group was killed. Its slot, though, stays leased
until the lease's TTL runs out (nobody renews or releases it), and the overlap window
``[kill, kill + slot TTL)`` is reported on its own: a peak above the cap inside it is flagged
"while a killed holder's slot is leased", outside it as a breach.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import redis


@dataclass(frozen=True)
class Execution:
    i: int
    start: float
    end: float | None  #: None: killed, or still running when read
    pgid: int
    pid: int


def read(obs: redis.Redis, run: str) -> list[Execution]:
    ends: dict[str, float] = {}
    for raw in obs.lrange(f"{run}:end", 0, -1):
        _, t, uid = raw.decode().split()
        ends[uid] = float(t)
    out = []
    for raw in obs.lrange(f"{run}:start", 0, -1):
        i, t, pgid, pid, uid = raw.decode().split()
        out.append(Execution(int(i), float(t), ends.get(uid), int(pgid), int(pid)))
    return out


@dataclass(frozen=True)
class Fault:
    at: float  #: unix time
    kind: str  #: "kill", "store", "broker"
    label: str
    back_at: float | None = None  #: for outages: when the server was up again


@dataclass
class Analysis:
    sent: int
    completed: int
    lost: list[int]
    duplicated: dict[int, int]  #: index -> completions, for those completed more than once
    reruns_after_kill: int  #: tasks started again after a run of theirs was killed
    cut_by_kill: int  #: executions ended by a kill
    unfinished: int  #: executions with neither an end nor a kill (still running, or stuck)
    cap: int
    peak: int
    peak_outside_lease_windows: int
    above_cap: list[tuple[float, float, int, bool]]  #: (from, to, level, inside a lease window)
    makespan_s: float
    ideal_s: float
    fifo_max_inversion: int
    recovery_s: dict[str, float | None] = field(default_factory=dict)
    first_start: float = 0.0

    @property
    def capacity_used(self) -> float:
        return self.ideal_s / self.makespan_s if self.makespan_s > 0 else 0.0


def _kill_time(pgid: int, start: float, kills: Mapping[int, float]) -> float | None:
    at = kills.get(pgid)
    return at if at is not None and at >= start else None


def _merge(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for a, b in sorted(windows):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _inside(a: float, b: float, windows: list[tuple[float, float]]) -> bool:
    return any(w0 <= a and b <= w1 for w0, w1 in windows)


def analyse(
    executions: Sequence[Execution],
    sent: Sequence[int],
    cap: int,
    body_s: float,
    *,
    kills: Mapping[int, float] | None = None,
    slot_ttl_s: float = 0.0,
    faults: Sequence[Fault] = (),
    until: float,
) -> Analysis:
    """``kills``: pgid -> when that process group was SIGKILLed; ``until``: when the records
    were read (the end of an execution that has neither an end nor a kill)."""
    kills = kills or {}
    ends_per: dict[int, int] = {}
    killed_tasks: set[int] = set()
    intervals: list[tuple[float, float]] = []
    windows: list[tuple[float, float]] = []
    cut = unfinished = 0
    for e in executions:
        if e.end is not None:
            ends_per[e.i] = ends_per.get(e.i, 0) + 1
            intervals.append((e.start, e.end))
            continue
        killed_at = _kill_time(e.pgid, e.start, kills)
        if killed_at is not None:
            cut += 1
            killed_tasks.add(e.i)
            intervals.append((e.start, killed_at))
            windows.append((killed_at, killed_at + slot_ttl_s))
        else:
            unfinished += 1
            intervals.append((e.start, until))
    windows = _merge(windows)

    # Sweep: ends before starts at the same instant (a slot handed over is not an overlap).
    events = sorted(
        [(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda x: (x[0], x[1])
    )
    level = peak = peak_out = 0
    above: list[tuple[float, float, int, bool]] = []
    for k, (t, step) in enumerate(events):
        level += step
        peak = max(peak, level)
        nxt = events[k + 1][0] if k + 1 < len(events) else t
        if nxt <= t:
            continue
        inside = level > cap and _inside(t, nxt, windows)
        if not inside:
            peak_out = max(peak_out, level)
        if level > cap:
            above.append((t, nxt, level, inside))

    # FIFO: overtaking distance in send order, by first start.
    first: dict[int, float] = {}
    for e in executions:
        first[e.i] = min(first.get(e.i, e.start), e.start)
    inversion = 0
    order = {i: n for n, i in enumerate(sent)}
    highest = -1
    for i, _ in sorted(first.items(), key=lambda kv: kv[1]):
        n = order.get(i, -1)
        if highest > n:
            inversion = max(inversion, highest - n)
        highest = max(highest, n)

    done = [e for e in executions if e.end is not None]
    first_start = min((e.start for e in executions), default=0.0)
    last_end = max((e.end for e in done if e.end is not None), default=first_start)
    completed_ends = sorted(e.end for e in done if e.end is not None)
    recovery: dict[str, float | None] = {}
    for f in faults:
        recovery[f.label] = _next_after(completed_ends, f.at)
        if f.back_at is not None:
            recovery[f.label + " (from back up)"] = _next_after(completed_ends, f.back_at)
    sent_set = set(sent)
    return Analysis(
        sent=len(sent),
        completed=len(sent_set & set(ends_per)),
        lost=sorted(sent_set - set(ends_per)),
        duplicated={i: n for i, n in ends_per.items() if n > 1},
        reruns_after_kill=sum(1 for i in killed_tasks if i in ends_per),
        cut_by_kill=cut,
        unfinished=unfinished,
        cap=cap,
        peak=peak,
        peak_outside_lease_windows=peak_out,
        above_cap=above,
        makespan_s=last_end - first_start,
        ideal_s=len(sent) * body_s / cap,
        fifo_max_inversion=inversion,
        recovery_s=recovery,
        first_start=first_start,
    )


def _next_after(sorted_ends: list[float], t: float) -> float | None:
    import bisect

    k = bisect.bisect_right(sorted_ends, t)
    return sorted_ends[k] - t if k < len(sorted_ends) else None
