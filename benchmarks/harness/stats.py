"""Redis ``INFO`` deltas on the store server: requests (round trips) and commands per task.

``total_reads_processed`` counts the reads the server served from clients: with no pipelining,
one per request, so the delta is the round trips every client made (renewal threads included).
``total_commands_processed`` and ``INFO commandstats`` also count the commands Lua scripts ran.
Only meaningful on a server nothing else uses: the harness gives the store one of its own.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import redis


@dataclass(frozen=True)
class Snapshot:
    reads: int
    commands: int
    by_command: dict[str, int] = field(default_factory=dict)


def snapshot(url: str) -> Snapshot:
    with contextlib.closing(redis.Redis.from_url(url, socket_timeout=10)) as client:
        stats = client.info("stats")
        per = client.info("commandstats")
    by_command = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in per.items()}
    return Snapshot(int(stats["total_reads_processed"]), int(stats["total_commands_processed"]), by_command)


@dataclass(frozen=True)
class PerTask:
    round_trips: float
    commands: float
    top: dict[str, float]  #: the commands per task, largest first


#: What one snapshot itself costs the server (measured on an idle server): reads (the HELLO
#: handshake, two INFOs, the close) and commands (HELLO and the two INFOs).
SNAPSHOT_READS, SNAPSHOT_COMMANDS = 7, 3


def per_task(before: Snapshot, after: Snapshot, tasks: int) -> PerTask:
    n = max(tasks, 1)
    commands = {
        k: (after.by_command.get(k, 0) - before.by_command.get(k, 0)) / n
        for k in after.by_command
        if k not in ("info", "hello") and after.by_command.get(k, 0) > before.by_command.get(k, 0)
    }
    top = dict(sorted(commands.items(), key=lambda kv: -kv[1])[:6])
    return PerTask(
        round_trips=(after.reads - before.reads - SNAPSHOT_READS) / n,
        commands=(after.commands - before.commands - SNAPSHOT_COMMANDS) / n,
        top=top,
    )
