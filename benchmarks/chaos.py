"""Chaos on real workers: SIGKILLed workers, a restarted store, a restarted broker; does every
task complete exactly once, and does the pool's cap hold?

    python benchmarks/chaos.py --quick                 # CI: ~300 tasks, 3 kills, one store blip
    python benchmarks/chaos.py                         # 2,000 tasks, 8 kills, store + broker restarts
    python benchmarks/chaos.py --frameworks celery --brokers rabbitmq --json out.json

Per framework and broker (Redis for all three, RabbitMQ for Celery and Dramatiq), two worker
processes run tasks of ``body`` seconds (20 ms) through ``pool_max_size`` (3), each task with a
``once_key`` derived from its index. Tasks are sent in waves, one just before each fault, so
every fault hits work in flight:

- **kill**: every ~``--kill-every-s`` one worker process group, chosen at random, is SIGKILLed
  (main process and children, as a dying host) and started again at once;
- **store restart**: the private cachify store ``redis-server`` is SIGKILLed and started again
  on the same port ``--store-down-s`` later. It keeps an append-only file (fsync always), as a
  store holding a pool's waiting room must (parked tasks live there, acknowledged by the
  broker): holds, slots and parked tasks survive. ``--empty-store`` restarts it without one
  (everything in it is gone): holds and slots are soft state, but tasks parked at that moment
  are lost with it — the run shows how many (``pool_max_waiting=0`` keeps every wait in the
  broker instead);
- **broker restart** (Redis broker only; RabbitMQ is the machine's shared server): the private
  broker ``redis-server`` (append-only file, fsync always, so queued messages survive) is
  SIGKILLed and started again ``--broker-down-s`` later.

Then the harness waits up to ``--drain-s`` for the rest. Per run: completed, lost (sent, never
completed), duplicated (completed more than once), runs cut by a kill and run again, peak
concurrency vs the cap from the bodies' own start/end records (a peak above the cap is excused
only inside ``[kill, kill + pool_slot_ttl)`` of a killed holder, and flagged either way),
makespan vs ideal, recovery after each fault (fault → next completion), workers that exited on
their own, cachify keys left in the store. Exit status 1 on any task lost by cachify or any peak
above the cap outside a killed holder's lease window.

Celery on a Redis broker has a loss of its own: kombu pops a message (``BRPOP``) and records it
as delivered (``HSET unacked``) in two steps, on two connections, so a worker SIGKILLed between
them takes the message with it, with or without cachify (celery/kombu issue 1836). For Celery on
Redis the harness keeps the broker's command log (``redis-cli monitor``) and reports a task
whose last message was pushed and never recorded as delivered as lost *by the transport*: shown,
not failed (about one run in ten of ``--quick`` here loses one task that way).

The frameworks are set up for crashes, as production would be: Celery ``acks_late`` +
``reject_on_worker_lost`` and (Redis) ``visibility_timeout``; Dramatiq's Redis broker with a
short ``heartbeat_timeout`` and frequent maintenance (which requeues a dead worker's messages);
Taskiq's stream broker with a short ``idle_timeout`` (XAUTOCLAIM of a dead worker's messages).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: harness, apps

import redis
from apps.config import AppConfig
from harness import records
from harness.frameworks import FRAMEWORKS, describe
from harness.servers import RABBITMQ_URL, RedisServer, rabbitmq_vhost, redis_servers
from harness.workers import WorkerSet

#: Worker processes per run (each killed in turn at random).
PROCESSES = 2
#: Sent this long before a kill, a wave is still in flight when the kill lands.
WAVE_LEAD_S = 0.5
#: Sent this long before an outage, a wave is still being delivered when the server goes.
OUTAGE_LEAD_S = 0.3
#: Random spread (±) around each kill interval.
KILL_JITTER_S = 0.5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    tasks: int
    kills: int
    kill_every_s: float
    store_down_s: float  #: 0: no store restart
    broker_down_s: float  #: 0: no broker restart
    pool_size: int
    body_s: float
    slots_per_worker: int
    slot_ttl_s: float
    backoff_s: tuple[float, float]
    drain_s: float
    seed: int


@dataclass(order=True)
class Event:
    at: float  #: seconds after the start
    kind: str = field(compare=False)  #: wave, kill, store_down, store_up, broker_down, broker_up
    arg: Any = field(default=None, compare=False)


def schedule(plan: Plan, rng: random.Random, broker_restart: bool) -> list[Event]:
    """Faults every ~kill_every_s; one wave of tasks at the start and one before each fault."""
    faults: list[Event] = []
    t = 0.0
    for k in range(plan.kills):
        t += plan.kill_every_s + rng.uniform(-KILL_JITTER_S, KILL_JITTER_S)
        faults.append(Event(t, "kill", k + 1))
    if plan.store_down_s > 0:
        t += plan.kill_every_s
        faults.append(Event(t, "store_down"))
        t += plan.store_down_s
        faults.append(Event(t, "store_up"))
    if broker_restart and plan.broker_down_s > 0:
        t += plan.kill_every_s
        faults.append(Event(t, "broker_down"))
        t += plan.broker_down_s
        faults.append(Event(t, "broker_up"))
    starts = [f for f in faults if f.kind in ("kill", "store_down", "broker_down")]
    waves = 1 + len(starts)
    bounds = [plan.tasks * w // waves for w in range(waves + 1)]
    events = [Event(0.0, "wave", range(bounds[0], bounds[1]))]
    for w, f in enumerate(starts, start=1):
        lead = WAVE_LEAD_S if f.kind == "kill" else OUTAGE_LEAD_S
        events.append(Event(max(0.0, f.at - lead), "wave", range(bounds[w], bounds[w + 1])))
    return sorted(events + faults)


@dataclass
class Result:
    framework: str
    broker: str
    sent: int
    completed: int
    lost: list[int]
    duplicated: dict[int, int]
    reruns_after_kill: int
    cut_by_kill: int
    unfinished: int
    cap: int
    peak: int
    peak_outside_lease_windows: int
    above_cap_windows: list[tuple[float, float, int, bool]]
    makespan_s: float
    ideal_s: float
    recovery_s: dict[str, float | None]
    unexpected_exits: list[str]
    send_failed_attempts: int
    send_errors: list[str]
    not_sent: list[int]
    store_keys_left: list[str]
    broker_keys_left: list[str]
    lost_detail: list[str]
    duplicate_detail: dict[str, int]
    log_counts: dict[str, int]
    elapsed_s: float
    #: Lost tasks whose last message the broker's own command log shows popped by a worker that
    #: died before it recorded the delivery (kombu's Redis transport; see :func:`transport_lost`).
    lost_in_transport: list[int] = field(default_factory=list)

    @property
    def lost_by_cachify(self) -> list[int]:
        """Lost tasks not accounted for by the broker transport's own window."""
        return [i for i in self.lost if i not in set(self.lost_in_transport)]

    @property
    def failed(self) -> bool:
        return bool(self.lost_by_cachify) or self.peak_outside_lease_windows > self.cap


def framework_options(framework: str, broker: str, plan: Plan) -> dict[str, Any]:
    if framework == "celery":
        options: dict[str, Any] = {"acks_late": True}
        if broker == "redis":
            # Longer than any requeue countdown (pool_backoff's max): a message a live worker
            # holds for its countdown must not be restored to the queue meanwhile.
            options["visibility_timeout_s"] = max(20.0, 4 * plan.backoff_s[1])
        return options
    if framework == "dramatiq":
        return {"heartbeat_timeout_ms": 10_000, "maintenance_chance": 50_000}
    return {"idle_timeout_ms": 10_000}


@contextlib.contextmanager
def broker_url(broker: str, server: RedisServer) -> Iterator[str]:
    if broker == "rabbitmq":
        with rabbitmq_vhost(os.environ.get("CFY_BENCH_RABBITMQ_URL", RABBITMQ_URL)) as url:
            yield url
    else:
        yield server.url(0)


def store_keys(store_url: str, prefix: str, limit: int = 8) -> list[str]:
    """The run's cachify keys still in the store, with their TTLs (a sample)."""
    return _keys(store_url, f"*{prefix}*", limit)  # keys are hash-tagged: {prefix...}


def broker_keys(url: str, run: str, limit: int = 12) -> list[str]:
    """What is left of the run on a Redis broker after the drain (its keys, and Celery's shared
    ``unacked`` hash and index), with their sizes."""
    return _keys(url, "*", limit, only=(run, "unacked")) if url.startswith("redis") else []


def _keys(url: str, match: str, limit: int, only: tuple[str, ...] | None = None) -> list[str]:
    out: list[str] = []
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        for key in client.scan_iter(match=match, count=1000):
            kind = client.type(key).decode()
            size = {"list": client.llen, "hash": client.hlen, "zset": client.zcard, "set": client.scard,
                    "stream": client.xlen}.get(kind)  # fmt: skip
            if only is not None and not any(part in key.decode() for part in only):
                continue
            extra = ""
            if kind == "stream":  # delivered to a consumer, never acknowledged
                extra = f", {sum(int(g['pending']) for g in client.xinfo_groups(key))} pending"
            out.append(
                f"{key.decode()} ({kind}{f' of {size(key)}' if size else ''}{extra}, ttl {client.pttl(key)} ms)"
            )
            if len(out) >= limit:
                out.append("...")
                break
    except redis.RedisError as exc:
        out.append(f"(could not read: {exc})")
    finally:
        client.close()
    return out


def run_one(
    framework: str,
    broker: str,
    plan: Plan,
    servers: dict[str, RedisServer],
    logdir: Path,
    log_level: str,
    run: str,
    control: bool = False,
    monitor_to: str | None = None,
) -> Result:
    """One chaos run; ``control``: the same run with a task without any cachify option;
    ``monitor_to``: log every command a Redis broker receives to ``<monitor_to>.<run>.<n>``
    (``redis-cli monitor``, one file per broker start)."""
    # Celery on Redis: the broker's command log is always kept, to tell a task kombu's transport
    # lost (popped, never recorded as delivered) from one cachify lost.
    trace_to = monitor_to or (str(logdir / "broker") if framework == "celery" and broker == "redis" else None)
    rng = random.Random(f"{plan.seed}-{framework}-{broker}")
    fw = FRAMEWORKS[framework]
    store, broker_server = servers["store"], servers["broker"]
    events = schedule(plan, rng, broker_restart=broker == "redis")
    began = time.time()
    with broker_url(broker, broker_server) as url:
        config = AppConfig(
            run=run,
            broker_url=url,
            store_url=store.url(0),
            observe_url=servers["observe"].url(0),
            pool_size=plan.pool_size,
            body_s=plan.body_s,
            task_options={
                "once_key": "chaos-{i}",
                "pool_slot_ttl": plan.slot_ttl_s,
                "pool_backoff": list(plan.backoff_s),
            },
            framework_options=framework_options(framework, broker, plan),
        )
        workers = WorkerSet(fw, config, [plan.slots_per_worker] * PROCESSES, logdir, log_level)
        kills: dict[int, float] = {}
        faults: list[records.Fault] = []
        sent: list[int] = []
        exits: list[str] = []
        failed_attempts = 0
        errors: list[str] = []
        given_up: list[int] = []
        monitors: list[subprocess.Popen[bytes]] = []

        def monitor() -> None:
            if trace_to is not None and broker == "redis":
                with open(f"{trace_to}.{run}.{len(monitors)}", "wb") as out:
                    argv = [
                        shutil.which("redis-cli") or "redis-cli",
                        "-p",
                        str(broker_server.port),
                        "monitor",
                    ]
                    monitors.append(subprocess.Popen(argv, stdout=out))

        try:
            workers.start()
            monitor()
            t0 = time.time()
            down: dict[str, float] = {}
            for n_event, event in enumerate(events):
                _wait_until(t0 + event.at, lambda: exits.extend(workers.revive_dead()))
                now = time.time()
                if event.kind == "wave":
                    # A control's tasks never wait for a slot, so a wave sent at once would be
                    # over before its fault: spread it over the time until the next event.
                    upcoming = [e.at for e in events[n_event + 1 :] if e.kind != "wave"]
                    pace_s = (
                        (upcoming[0] - event.at) * 0.9 / max(len(event.arg), 1) if control and upcoming else 0
                    )
                    s = workers.send("plain" if control else "gated", event.arg, pace_s=pace_s)
                    sent += [i for i in event.arg if i in s.at]
                    failed_attempts += s.failed_attempts
                    errors += s.errors
                    given_up += s.given_up
                elif event.kind == "kill":
                    k = rng.randrange(PROCESSES)
                    pgid = workers.workers[k].pgid
                    kills[pgid] = workers.kill(k)
                    faults.append(records.Fault(kills[pgid], "kill", f"kill {event.arg} ({fw.name}-{k})"))
                    workers.restart(k)
                    log(f"  t={now - t0:5.1f}s kill {event.arg}: {fw.name}-{k} (pgid {pgid}), restarted")
                elif event.kind in ("store_down", "broker_down"):
                    server = store if event.kind == "store_down" else broker_server
                    server.kill()
                    down[event.kind] = time.time()
                    log(f"  t={now - t0:5.1f}s {event.kind.split('_')[0]} server SIGKILLed")
                else:
                    server = store if event.kind == "store_up" else broker_server
                    server.start()
                    name = event.kind.split("_")[0]
                    at = down.pop(f"{name}_down")
                    faults.append(
                        records.Fault(at, name, f"{name} down {time.time() - at:.1f}s", back_at=time.time())
                    )
                    log(f"  t={now - t0:5.1f}s {name} server back on :{server.port}")
                    if name == "broker":
                        monitor()
            log(f"  t={time.time() - t0:5.1f}s all {len(sent)} sent; draining (up to {plan.drain_s:.0f}s)")
            deadline = time.monotonic() + plan.drain_s
            while not workers.wait_done(sent, timeout_s=1.0):
                exits.extend(workers.revive_dead())
                if time.monotonic() > deadline:
                    break
            until = time.time()
            time.sleep(min(2.0, plan.slot_ttl_s))  # releases after the last end record land
            left = store_keys(store.url(0), config.prefix)
            on_broker = broker_keys(url, run)
            logged = log_counts(workers)
        finally:
            for m in monitors:
                m.kill()
                m.wait()
            workers.stop(grace_s=5)
            for server in (store, broker_server):
                if server.proc is None or server.proc.poll() is not None:
                    server.start()  # a failed run must not leave the next one without a server
    obs = redis.Redis.from_url(servers["observe"].url(0))
    try:
        executions = records.read(obs, run)
    finally:
        obs.close()
    cap = PROCESSES * plan.slots_per_worker if control else plan.pool_size
    a = records.analyse(
        executions, sent, cap, plan.body_s, kills=kills, slot_ttl_s=plan.slot_ttl_s, faults=faults,
        until=until,
    )  # fmt: skip
    # read once, and only when a task was lost
    commands = broker_log([Path(f"{trace_to}.{run}.{n}") for n in range(len(monitors))]) if a.lost else []
    return Result(
        framework, f"{broker}, control (no cachify)" if control else broker, a.sent, a.completed, a.lost, a.duplicated, a.reruns_after_kill, a.cut_by_kill,
        a.unfinished, a.cap, a.peak, a.peak_outside_lease_windows, a.above_cap[:10], a.makespan_s, a.ideal_s,
        a.recovery_s, exits, failed_attempts, errors[:3], given_up, left, on_broker, lost_detail(a.lost, executions, kills, commands),
        duplicate_detail(a.duplicated, executions, kills),
        logged,
        time.time() - began,
        [i for i in a.lost if not any(e.i == i for e in executions) and transport_lost(i, commands)],
    )  # fmt: skip


def lost_detail(
    lost: list[int], executions: list[records.Execution], kills: dict[int, float], commands: list[bytes] = ()
) -> list[str]:
    out = []
    for i in lost[:10]:
        mine = [e for e in executions if e.i == i]
        if not mine:
            out.append(f"{i}: never started{broker_fate(i, commands)}")
            continue
        killed = sum(1 for e in mine if e.end is None and e.pgid in kills)
        out.append(f"{i}: started {len(mine)}x, {killed} cut by a kill, never completed")
    return out


#: A Celery message's kombu delivery tag, in a push line of ``redis-cli monitor``.
_DELIVERY_TAG = re.compile(r'delivery_tag[\\"]*: [\\"]*([0-9a-f-]{36})')


def broker_log(traces: list[Path]) -> list[bytes]:
    """The lines of a Redis broker's command logs (``redis-cli monitor``, one file per start)."""
    return [line for path in traces if path.exists() for line in path.read_bytes().splitlines()]


def _pushes(i: int, lines: list[bytes]) -> tuple[list[str], set[str]]:
    """Celery task ``i``'s messages in a Redis broker's command log (the benchmark app names its
    task ids ``<task>-<i>-<hex>``): the delivery tags pushed (``LPUSH``; a hand-over pushed to
    the consuming end, ``RPUSH``), in order, and those kombu recorded as delivered (``HSET``
    into ``unacked``, which it does after popping a message, on another connection)."""
    pushed: list[str] = []
    recorded: set[str] = set()
    needle = f"-{i}-".encode()
    for line in lines:
        if (
            (b'"LPUSH"' in line or b'"RPUSH"' in line)
            and needle in line
            and (m := _DELIVERY_TAG.search(line.decode(errors="replace")))
        ):
            pushed.append(m.group(1))
    tags = {tag.encode() for tag in pushed}
    for line in lines:
        if b'"HSET" "unacked"' in line and any(tag in line for tag in tags):
            recorded.update(tag for tag in pushed if tag.encode() in line)
    return pushed, recorded


def transport_lost(i: int, commands: list[bytes]) -> bool:
    """Whether task ``i`` (which never started) was lost by kombu's Redis transport: its last
    message was pushed and never recorded as delivered (in ``commands``, :func:`broker_log`). kombu
    pops a message (``BRPOP``) and only then records it in ``unacked`` (``MULTI``/``HSET``, on
    another connection): a worker killed in between takes the message with it, whatever runs
    the task (celery/kombu issue 1836, celery/celery 7950), as it would without cachify."""
    pushed, recorded = _pushes(i, commands)
    return bool(pushed) and pushed[-1] not in recorded


def broker_fate(i: int, commands: list[bytes]) -> str:
    """What a Redis broker's command log says of Celery task ``i``'s messages, for the report."""
    pushed, recorded = _pushes(i, commands)
    if not pushed:
        return ""
    never = [tag for tag in pushed if tag not in recorded]
    return f"; broker: {len(pushed)} message(s) pushed, {len(never)} popped and never recorded as delivered"


#: Worker log lines counted per run (each worker's log of the run).
LOG_PATTERNS = {
    "error lines": re.compile(r"\bERROR\b"),
    "Dramatiq retries": re.compile(r"Retrying message"),
    "Taskiq task exceptions": re.compile(r"Exception found while executing function"),
    "Celery task failures": re.compile(r"raised unexpected"),
    "cachify deferrals logged": re.compile(r"store unreachable"),
}


def log_counts(workers: WorkerSet) -> dict[str, int]:
    counts = dict.fromkeys(LOG_PATTERNS, 0)
    for w in workers.workers:
        with contextlib.suppress(OSError):
            for line in w.log.read_text(errors="replace").splitlines():
                for name, pattern in LOG_PATTERNS.items():
                    if pattern.search(line):
                        counts[name] += 1
    return {k: v for k, v in counts.items() if v}


#: A completion this close before its worker's kill may never have been acknowledged.
ACK_WINDOW_S = 1.0


def duplicate_detail(
    duplicated: dict[int, int], executions: list[records.Execution], kills: dict[int, float]
) -> dict[str, int]:
    """Why each task completed twice, as far as the records tell: its first completion was on a
    worker killed right after it (the acknowledgement died with it, the broker redelivered), or not."""
    out = {"first completion <1 s before its worker was killed": 0, "other": 0}
    for i in duplicated:
        done = sorted((e for e in executions if e.i == i and e.end is not None), key=lambda e: e.start)
        first = done[0]
        killed_at = kills.get(first.pgid)
        if killed_at is not None and first.end is not None and 0 <= killed_at - first.end < ACK_WINDOW_S:
            out["first completion <1 s before its worker was killed"] += 1
        else:
            out["other"] += 1
    return out


def _wait_until(t: float, tick: Callable[[], None]) -> None:
    while True:
        left = t - time.time()
        if left <= 0:
            return
        tick()
        time.sleep(min(0.2, left))


def report(r: Result) -> list[str]:
    lines = [
        f"### {r.framework} / {r.broker}: {'FAIL' if r.failed else 'ok'}",
        "",
        f"- sent {r.sent}, completed {r.completed}, **lost {len(r.lost)}**, duplicated (completed more than once) "
        f"{len(r.duplicated)}; runs cut by a kill {r.cut_by_kill}, of which re-run to completion "
        f"{r.reruns_after_kill}; started but neither ended nor killed {r.unfinished}",
        f"- peak concurrency {r.peak} / cap {r.cap}; outside a killed holder's lease window "
        f"{r.peak_outside_lease_windows}",
        f"- makespan {r.makespan_s:.1f} s vs ideal {r.ideal_s:.1f} s (the waves wait for the fault schedule)",
        "- recovery (fault → next completion): "
        + ", ".join(f"{k} {'never' if v is None else f'{v:.2f}s'}" for k, v in r.recovery_s.items()),
    ]
    if r.lost:
        lines.append(
            f"- lost: {r.lost[:20]}{' ...' if len(r.lost) > 20 else ''}; " + "; ".join(r.lost_detail)
        )
    if r.lost_in_transport:
        lines.append(
            f"- of which lost by the broker transport, not cachify: {r.lost_in_transport} (kombu's Redis "
            "transport popped the message and its worker was killed before it recorded the delivery; "
            "not a failure of this run)"
        )
    if r.duplicated:
        lines.append(f"- duplicated: {dict(list(r.duplicated.items())[:10])}; why: {r.duplicate_detail}")
    for a, b, level, inside in r.above_cap_windows:
        where = "inside a killed holder's lease window" if inside else "OUTSIDE any lease window"
        lines.append(f"- above cap: {level} for {1000 * (b - a):.0f} ms, {where}")
    if r.log_counts:
        lines.append(f"- worker log lines: {r.log_counts}")
    if r.unexpected_exits:
        lines.append(f"- workers that exited on their own (restarted): {r.unexpected_exits}")
    if r.send_failed_attempts:
        lines.append(f"- failed send attempts (retried) {r.send_failed_attempts}: {r.send_errors}")
    if r.not_sent:
        lines.append(f"- given up sending (not counted as lost): {len(r.not_sent)}")
    if r.store_keys_left:
        lines.append(f"- cachify keys left in the store after the drain: {r.store_keys_left}")
    if r.lost and r.broker_keys_left:
        lines.append(f"- broker keys after the drain: {r.broker_keys_left}")
    return lines


def summary(results: list[Result]) -> list[str]:
    lines = [
        "| framework | broker | sent | completed | lost | duplicated | cut by kill / re-run | peak / cap "
        "| makespan / ideal s | recovery: kills (max) | store | broker | keys left |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def rec(r: Result, prefix: str) -> str:
        vals = [v for k, v in r.recovery_s.items() if k.startswith(prefix) and "back up" not in k]
        back = [v for k, v in r.recovery_s.items() if k.startswith(prefix) and "back up" in k]
        if not vals:
            return "-"
        text = "never" if any(v is None for v in vals) else f"{max(v for v in vals if v is not None):.1f}s"
        if back:
            text += " (" + ("never" if back[0] is None else f"{back[0]:.1f}s") + " after up)"
        return text

    for r in results:
        lines.append(
            f"| {r.framework} | {r.broker} | {r.sent} | {r.completed} | {len(r.lost)}"
            f"{f' ({len(r.lost_in_transport)} by kombu)' if r.lost_in_transport else ''} | {len(r.duplicated)} "
            f"| {r.cut_by_kill} / {r.reruns_after_kill} | {r.peak} / {r.cap} | {r.makespan_s:.1f} / {r.ideal_s:.1f} "
            f"| {rec(r, 'kill')} | {rec(r, 'store')} | {rec(r, 'broker')} | {len(r.store_keys_left)} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI form: 300 tasks, 3 kills, one store blip")
    parser.add_argument("-n", "--tasks", type=int, help="tasks per run (default 2000; quick 300)")
    parser.add_argument("--kills", type=int, help="worker SIGKILLs per run (default 8; quick 3)")
    parser.add_argument("--kill-every-s", type=float, default=3.0, help="seconds between kills (default 3)")
    parser.add_argument(
        "--store-down-s", type=float, default=6.0, help="store restart outage; 0: none (default 6)"
    )
    parser.add_argument(
        "--empty-store",
        action="store_true",
        help="restart the store without persistence: holds, slots and parked tasks are gone",
    )
    parser.add_argument(
        "--broker-down-s", type=float, help="Redis broker restart outage; 0: none (default 3; quick 0)"
    )
    parser.add_argument("--frameworks", default="celery,dramatiq,taskiq")
    parser.add_argument("--brokers", help="redis and/or rabbitmq (default both; quick: redis)")
    parser.add_argument("--pool-size", type=int, default=3)
    parser.add_argument("--body-s", type=float, default=0.02)
    parser.add_argument("--slots-per-worker", type=int, default=4)
    parser.add_argument(
        "--slot-ttl-s", type=float, default=10.0, help="pool_slot_ttl of the task (default 10)"
    )
    parser.add_argument(
        "--backoff", default="0.05,1.0", help="pool_backoff first,max seconds (default 0.05,1.0)"
    )
    parser.add_argument("--drain-s", type=float, help="wait after the last fault (default 120; quick 45)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--control", action="store_true", help="also run each pair with a task without cachify options"
    )
    parser.add_argument("--json", type=Path, help="write every run's result to this file")
    parser.add_argument("--log-level", default="WARNING", help="worker log level (default WARNING)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs (path printed)")
    parser.add_argument(
        "--monitor-broker",
        metavar="PATH",
        help="diagnosis: log every command the Redis broker receives (redis-cli monitor) to PATH.<run>.<n>; "
        "a lost task whose message was LPUSHed and never HSET into kombu's 'unacked' was popped by a "
        "worker that died before recording it",
    )
    args = parser.parse_args()
    first, most = (float(x) for x in args.backoff.split(","))
    plan = Plan(
        tasks=args.tasks or (300 if args.quick else 2000),
        kills=args.kills if args.kills is not None else (3 if args.quick else 8),
        kill_every_s=args.kill_every_s,
        store_down_s=args.store_down_s,
        broker_down_s=args.broker_down_s if args.broker_down_s is not None else (0.0 if args.quick else 3.0),
        pool_size=args.pool_size,
        body_s=args.body_s,
        slots_per_worker=args.slots_per_worker,
        slot_ttl_s=args.slot_ttl_s,
        backoff_s=(first, most),
        drain_s=args.drain_s or (45.0 if args.quick else 120.0),
        seed=args.seed,
    )
    brokers = [b.strip() for b in (args.brokers or ("redis" if args.quick else "redis,rabbitmq")).split(",")]
    combos = [
        (f, b, control)
        for f in (x.strip() for x in args.frameworks.split(",") if x.strip())
        for b in brokers
        if f in FRAMEWORKS and b in FRAMEWORKS[f].brokers
        for control in ((False, True) if args.control else (False,))
    ]
    if not combos:
        parser.error("no framework/broker pair to run (Taskiq runs on Redis only)")
    logdir = Path(tempfile.mkdtemp(prefix="cfy-chaos-"))
    results: list[Result] = []
    crashed: list[str] = []
    store_durable = not args.empty_store
    with redis_servers(("broker", True), ("store", store_durable), ("observe", False)) as (
        broker,
        store,
        observe,
    ):
        servers = {"broker": broker, "store": store, "observe": observe}
        for n, (framework, broker_name, control) in enumerate(combos, start=1):
            what = "no cachify (control)" if control else f"cap {plan.pool_size}"
            log(f"{framework} / {broker_name}: {plan.tasks} tasks x {plan.body_s * 1000:.0f} ms, {what}")
            try:
                result = run_one(
                    framework,
                    broker_name,
                    plan,
                    servers,
                    logdir,
                    args.log_level,
                    f"{os.getpid()}-{n}",
                    control,
                    args.monitor_broker,
                )
            except Exception as exc:
                crashed.append(f"{framework} / {broker_name}: {type(exc).__name__}: {exc}")
                log(f"  CRASHED: {exc}")
                continue
            results.append(result)
            log(
                f"  {result.completed}/{result.sent} completed, {len(result.lost)} lost ({result.elapsed_s:.0f}s)"
            )
    machine = (
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        + ", ".join(describe(p) for p in ("celery", "dramatiq", "taskiq", "taskiq-redis", "redis"))
    )
    print(
        f"_{machine}. {plan.tasks} tasks x {plan.body_s * 1000:.0f} ms, pool_max_size={plan.pool_size}, "
        f"{PROCESSES} workers x {plan.slots_per_worker} slots, {plan.kills} kills every ~{plan.kill_every_s:.0f}s, "
        f"store down {plan.store_down_s:.0f}s ({'durable' if store_durable else 'empty'} restart), Redis broker down {plan.broker_down_s:.0f}s, "
        f"pool_slot_ttl={plan.slot_ttl_s:.0f}, pool_backoff={plan.backoff_s}. Timing on a shared machine is "
        "indicative only._\n"
    )
    print("\n".join(summary(results)))
    for r in results:
        print("\n" + "\n".join(report(r)))
    for c in crashed:
        print(f"\nCRASHED: {c}")
    if args.json:
        payload = {
            "machine": machine,
            "plan": asdict(plan),
            "results": [asdict(r) for r in results],
            "crashed": crashed,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    failed = crashed or any(r.failed for r in results)
    if args.keep_logs or failed:
        log(f"worker logs: {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
