"""Worker processes, each the leader of its own process group, stopped and killed by it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: After SIGTERM, how long a worker may take to exit before its group is SIGKILLed. Taskiq 0.13
#: stream workers may never exit on SIGTERM.
DEFAULT_STOP_GRACE_S = 5.0


@dataclass
class WorkerProcess:
    """One worker command (main process and whatever it forks), in a new session."""

    name: str
    command: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    history: list[int] = field(default_factory=list)  #: pids (= pgids) of every start

    @property
    def pgid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def start(self) -> WorkerProcess:
        with self.log.open("ab") as out:
            out.write(f"\n==== {self.name} start {time.strftime('%H:%M:%S')} ====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                list(self.command),
                cwd=self.cwd,
                env=dict(self.env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: one killpg reaches every child
            )
        self.started_at = time.time()
        self.history.append(self.proc.pid)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL the whole group at once, as a dying host would; returns the time of the kill."""
        at = time.time()
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        return at

    def stop(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> None:
        """SIGTERM the group, then SIGKILL it after ``grace_s`` (and always, for stray children)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
