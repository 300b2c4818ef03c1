"""One measurement's workers: start them and wait until every one has booted, send tasks in
order from the harness process, follow completions, kill and restart, stop."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from apps.config import AppConfig

from .frameworks import BENCH_DIR, Framework, SenderApp
from .processes import WorkerProcess

#: How long a fresh worker may take to boot (import, connect, fork its pool).
DEFAULT_READY_TIMEOUT_S = 90.0
#: How long one task's send is retried while it fails (the store or broker may be down).
DEFAULT_SEND_RETRY_S = 30.0


@dataclass
class Sent:
    """What a batch of sends did: when each index went out, and how many attempts failed."""

    at: dict[int, float] = field(default_factory=dict)
    failed_attempts: int = 0
    errors: list[str] = field(default_factory=list)
    given_up: list[int] = field(default_factory=list)


class Ends:
    """Follows ``<run>:end`` incrementally: which indices completed, how often, when."""

    def __init__(self, obs: redis.Redis, run: str) -> None:
        self.obs, self.key = obs, f"{run}:end"
        self.offset = 0
        self.counts: dict[int, int] = {}
        self.last_end = 0.0

    def poll(self) -> None:
        new = self.obs.lrange(self.key, self.offset, -1)
        self.offset += len(new)
        for raw in new:
            i, t, _ = raw.decode().split()
            self.counts[int(i)] = self.counts.get(int(i), 0) + 1
            self.last_end = max(self.last_end, float(t))

    def done(self, expected: Iterable[int]) -> bool:
        return all(i in self.counts for i in expected)


class WorkerSet:
    """Worker processes of one framework and app config, ``slots[k]`` slots in process ``k``."""

    def __init__(
        self,
        framework: Framework,
        config: AppConfig,
        slots: Sequence[int],
        logdir: Path,
        log_level: str = "WARNING",
    ) -> None:
        self.framework, self.config = framework, config
        self.obs = redis.Redis.from_url(config.observe_url, socket_timeout=10)
        env = {
            **os.environ,
            **config.env(),
            "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p),
        }
        self.workers = [
            WorkerProcess(
                name=f"{framework.name}-{k}",
                command=[],
                env=env,
                cwd=BENCH_DIR,
                log=logdir / f"{config.run}-{framework.name}-{k}.log",
            )
            for k in range(len(slots))
        ]
        self.slots = list(slots)
        self.log_level = log_level
        self.starts = 0
        self.sender: SenderApp | None = None
        self.ends = Ends(self.obs, config.run)

    def _start(self, k: int) -> None:
        self.starts += 1
        node = f"w{k}-{self.starts}-{self.config.run}"
        self.workers[k].command = self.framework.command(
            self.slots[k], node, self.log_level, self.config.framework_options
        )
        self.workers[k].start()

    def start(self, timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> None:
        for k in range(len(self.workers)):
            self._start(k)
        self.sender = self.framework.build(self.config)
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            booted = {int(x) for x in self.obs.smembers(f"{self.config.run}:ready")}
            waiting = [w for w in self.workers if w.pgid not in booted]
            if not waiting:
                return
            for w in waiting:
                if not w.alive():
                    raise RuntimeError(f"{w.name} exited while starting:\n{w.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{waiting[0].name} not ready in {timeout_s}s:\n{waiting[0].log_tail()}")
            time.sleep(0.1)

    def kill(self, k: int) -> float:
        return self.workers[k].kill()

    def restart(self, k: int) -> None:
        self.workers[k].stop(grace_s=0)
        self._start(k)

    def revive_dead(self) -> list[str]:
        """Restart any worker that exited on its own; the names of those restarted."""
        revived = []
        for k, w in enumerate(self.workers):
            if not w.alive():
                revived.append(f"{w.name} (exit {w.proc.returncode if w.proc else '?'})")
                self._start(k)
        return revived

    def send(
        self,
        task: str,
        indices: Iterable[int],
        retry_for_s: float = DEFAULT_SEND_RETRY_S,
        pace_s: float = 0.0,
        args_of: Callable[[int], tuple[object, ...]] | None = None,
    ) -> Sent:
        """Send ``task(i, *args_of(i))`` for each index, in order, ``pace_s`` apart. A failing send is retried every 0.2 s; once
        sends have failed for ``retry_for_s`` in a row, the rest of the batch is given up (not
        sent, so never counted as lost)."""
        assert self.sender is not None, "start() first"
        sent = Sent()
        failing_since: float | None = None
        for i in indices:
            if failing_since is not None and time.monotonic() - failing_since > retry_for_s:
                sent.given_up.append(i)
                continue
            while True:
                try:
                    self.sender.send(task, i, *(args_of(i) if args_of is not None else ()))
                except Exception as exc:
                    sent.failed_attempts += 1
                    if len(sent.errors) < 3:
                        sent.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    failing_since = failing_since or time.monotonic()
                    if time.monotonic() - failing_since > retry_for_s:
                        sent.given_up.append(i)
                        break
                    time.sleep(0.2)
                else:
                    failing_since = None
                    sent.at[i] = time.time()
                    break
            if pace_s > 0:
                time.sleep(pace_s)
        return sent

    def wait_done(self, expected: Sequence[int], timeout_s: float, tick: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            self.ends.poll()
            if self.ends.done(expected):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(tick)

    def stop(self, grace_s: float) -> None:
        for w in self.workers:
            w.stop(grace_s)
        if self.sender is not None:
            try:
                self.sender.close()
            except Exception as exc:  # a closed broker connection must not hide the results
                print(f"closing the {self.framework.name} sender: {exc!r}", flush=True)
        self.obs.close()

    def pgids(self) -> dict[int, str]:
        return {pid: w.name for w in self.workers for pid in w.history}
