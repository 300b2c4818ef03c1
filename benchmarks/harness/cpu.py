"""CPU seconds spent by the processes of a measurement, read off ``/proc`` (Linux).

A throughput benchmark on a small machine can be bound by CPU rather than by waiting: then
every process on it (the worker's main process, its pool children, the Redis server, the
benchmark's own poller) shares the cores, and the ratio of two rows' throughputs follows the
ratio of the CPU each row's tasks cost, wherever in those processes it is spent. A
:class:`CpuMeter` reads user + system time of named processes (a process with its children,
and the Redis server when it runs on this machine) before and after a row, so a report can say
how many µs of CPU one task cost in each, beside its tasks/s.

Where ``/proc`` is missing (not Linux) or a process cannot be read (a Redis server elsewhere,
in a container, behind a unix socket), :meth:`CpuMeter.read` leaves that name out and the
report says ``n/a``.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis

__all__ = [
    "CHILD",
    "CHILDREN_LISTED",
    "LOOPBACK",
    "CpuMeter",
    "children",
    "cpu_seconds",
    "cpu_table",
    "medians",
    "per_task_us",
    "redis_pid",
]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), or ``None`` if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:  # bytes: the process name may be anything
            fields = stat.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> list[int] | None:
    """The direct children of ``pid`` (``/proc/<pid>/task/*/children``), or ``None`` if they
    cannot be read (no such process, not Linux, a kernel without that file)."""
    found: list[int] = []
    try:
        for thread in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{thread}/children", encoding="ascii") as listed:
                found += [int(child) for child in listed.read().split()]
    except (OSError, ValueError):
        return None
    return found


#: Hosts whose Redis server may be this machine's own process.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def redis_pid(url: str) -> int | None:
    """The pid of the Redis server at ``url`` when it runs on this machine, else ``None``: a
    server on another host, behind a unix socket or in a container (the pid it reports is its
    own namespace's, so the process found here must be a Redis or Valkey server), or one that
    does not answer ``INFO``."""
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        if client.connection_pool.connection_kwargs.get("host") not in LOOPBACK:
            return None
        pid = int(client.info("server").get("process_id", 0))
    except (redis.RedisError, OSError, ValueError):
        return None
    finally:
        client.close()
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
            name = comm.read().strip()
    except OSError:
        return None
    if not pid or not name.startswith(("redis", "valkey")) or cpu_seconds(pid) is None:
        return None
    return pid


#: The name prefix of each child process in a :meth:`CpuMeter.read`.
CHILD = "child "
#: In a :meth:`CpuMeter.read`: present when the worker's children could be listed.
CHILDREN_LISTED = "children listed"


@dataclass
class CpuMeter:
    """CPU seconds by name: ``worker`` (a process), each of its children at the time of the
    read (``child <pid>``), ``redis`` and ``this process``; :func:`per_task_us` sums the
    children into ``worker children``."""

    worker: int | None = None
    redis: int | None = None

    def read(self) -> dict[str, float]:
        found: dict[str, float | None] = {"this process": cpu_seconds(os.getpid())}
        if self.worker is not None:
            found["worker"] = cpu_seconds(self.worker)
            kids = children(self.worker)
            if kids is not None:
                found[CHILDREN_LISTED] = float(len(kids))
                found.update({f"{CHILD}{child}": cpu_seconds(child) for child in kids})
        if self.redis is not None:
            found["redis"] = cpu_seconds(self.redis)
        return {name: value for name, value in found.items() if value is not None}


def per_task_us(before: Mapping[str, float], after: Mapping[str, float], tasks: int) -> dict[str, float]:
    """µs of CPU per task by name, for the names read both times, and ``worker children``: the
    children's sum, a child born in between counted from its start. Left out when the children
    could not be listed both times, or a child read before is gone after (its time since then
    is unknown: a pool that replaced a child); a child born and gone between the reads is not
    seen at all."""
    n = max(tasks, 1)
    per = {
        name: (after[name] - before[name]) / n * 1e6
        for name in before
        if name in after and not name.startswith(CHILD) and name != CHILDREN_LISTED
    }
    kids_before = {name for name in before if name.startswith(CHILD)}
    kids_after = {name for name in after if name.startswith(CHILD)}
    listed = CHILDREN_LISTED in before and CHILDREN_LISTED in after
    if "worker" in per and listed and kids_before <= kids_after:
        per["worker children"] = sum(after[k] - before.get(k, 0.0) for k in kids_after) / n * 1e6
    return per


def medians(samples: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per name, the median of the samples that have it."""
    names = {name for sample in samples for name in sample}
    return {name: statistics.median([s[name] for s in samples if name in s]) for name in names}


def cpu_table(
    rows: Sequence[tuple[str, Mapping[str, float]]],
    columns: Mapping[str, str],
    title: str,
    base: str | None = None,
) -> list[str]:
    """A Markdown table of µs of CPU per task (``rows``: name, µs by process) in the processes
    ``columns`` names (process name -> header), their sum ("all": of the cells shown, so of
    per-process medians where the caller took medians), and the CPU ratio against the row
    named ``base`` (default: the first): the inverse ratio of the sums, what a row's throughput
    would be against the base row's if the machine's cores were the bound."""
    if not rows:
        return []

    def total(cpu: Mapping[str, float]) -> float | None:
        parts = [cpu.get(name) for name in columns]
        return None if any(p is None for p in parts) else sum(p or 0.0 for p in parts)

    base_name, base_cpu = next((row for row in rows if row[0] == base), rows[0])
    base_us = total(base_cpu)
    lines = [
        "",
        f"{title} (user + system, from /proc; n/a: not readable here); CPU ratio against {base_name}:",
        "",
        "| | " + " | ".join(columns.values()) + " | all | CPU ratio |",
        "|---|" + "---:|" * (len(columns) + 2),
    ]
    for name, cpu in rows:
        all_us = total(cpu)
        ratio = f"{base_us / all_us:.2f}x" if base_us and all_us else "n/a"
        shown = [f"{c:,.0f}" if c is not None else "n/a" for c in [*(cpu.get(n) for n in columns), all_us]]
        lines.append(f"| {name} | " + " | ".join(shown) + f" | {ratio} |")
    return lines
