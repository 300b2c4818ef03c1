"""How each framework's worker process is started with a given number of slots, and how the
harness process builds the same app to send from.

Slots per worker process:

- **Celery**: ``--pool=prefork --concurrency=N``: N child processes, one task each.
- **Dramatiq**: ``--processes 1 --threads N``: one worker process of N threads.
- **Taskiq**: ``--workers 1 --max-async-tasks N --max-threadpool-threads N``: the bodies are
  sync functions, run in the worker's thread pool, so both limits are set to N.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from apps.config import AppConfig

BENCH_DIR = Path(__file__).resolve().parent.parent


class SenderApp(Protocol):
    config: AppConfig

    def send(self, task: str, i: int, *args: Any) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Framework:
    name: str
    module: str  #: the app module under benchmarks/apps
    brokers: tuple[str, ...]  #: "redis", "rabbitmq"

    def build(self, config: AppConfig) -> SenderApp:
        app: SenderApp = importlib.import_module(f"apps.{self.module}").build(config)
        return app

    def command(
        self, slots: int, node: str, log_level: str, options: Mapping[str, Any] | None = None
    ) -> list[str]:
        """The worker's command line; ``options``: the run's framework settings (Dramatiq's
        ``worker_timeout_ms`` becomes ``dramatiq_worker_timeout``, its consumers' longest idle poll)."""
        options = options or {}
        if self.name == "celery":
            return [
                sys.executable, "-m", "celery", "-A", f"apps.{self.module}", "worker", "--pool=prefork",
                f"--concurrency={slots}", f"--hostname={node}@%h", f"--loglevel={log_level}",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ]  # fmt: skip
        if self.name == "dramatiq":
            verbose = ["--verbose"] if log_level == "DEBUG" else []
            # dramatiq reads its consumers' longest idle poll from the environment
            timeout = (
                ["env", f"dramatiq_worker_timeout={int(options['worker_timeout_ms'])}"]
                if "worker_timeout_ms" in options
                else []
            )
            return [
                *timeout, sys.executable, "-m", "dramatiq", f"apps.{self.module}:broker", "--processes", "1",
                "--threads", str(slots), *verbose,
            ]  # fmt: skip
        taskiq = str(Path(sys.executable).with_name("taskiq"))
        return [
            taskiq, "worker", f"apps.{self.module}:broker", "--workers", "1", "--max-async-tasks", str(slots),
            "--max-threadpool-threads", str(slots), "--log-level", log_level,
        ]  # fmt: skip


FRAMEWORKS: dict[str, Framework] = {
    f.name: f
    for f in (
        Framework("celery", "celery_app", ("redis", "rabbitmq")),
        Framework("dramatiq", "dramatiq_app", ("redis", "rabbitmq")),
        Framework("taskiq", "taskiq_app", ("redis",)),
    )
}


def version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def describe(name: str) -> Any:
    return f"{name} {version(name)}"
