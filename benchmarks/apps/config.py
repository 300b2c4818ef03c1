"""What a worker app is built from, carried to worker processes in environment variables."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

#: One variable carries the whole config as JSON; the names below are its fields, documented.
ENV = "CFY_BENCH_APP"


@dataclass(frozen=True)
class AppConfig:
    """One measurement's app: every name in it (queue, pool key, limiter key) carries ``run``."""

    run: str  #: unique per measurement: queue / namespace / key prefix
    broker_url: str  #: redis://… or amqp://…
    store_url: str  #: cachify's store (redis://…)
    observe_url: str  #: where task bodies write their start/end records
    pool_size: int  #: ``pool_max_size`` of the gated task, ``limit`` of the limiter
    body_s: float  #: seconds each body sleeps (``time.sleep``)
    #: extra cachify options of the gated task (``pool_backoff``, ``pool_slot_ttl``, ``once_key``…)
    task_options: dict[str, Any] = field(default_factory=dict)
    #: framework settings: Celery ``acks_late``/``visibility_timeout_s``, Dramatiq
    #: ``heartbeat_timeout_ms``/``maintenance_chance``, Taskiq ``idle_timeout_ms``
    framework_options: dict[str, Any] = field(default_factory=dict)
    limiter_url: str = ""  #: Dramatiq's ConcurrentRateLimiter backend (Redis)
    #: cachify options of the ``rated`` task (``rated(i)``: ``rate_key`` + ``rate``, ...); none: a plain task
    rated_options: dict[str, Any] = field(default_factory=dict)
    #: cachify options of the ``tenant`` task (``tenant(i, tenant)``: ``rate_keys``, ...)
    tenant_options: dict[str, Any] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {ENV: json.dumps(asdict(self))}

    @classmethod
    def from_env(cls) -> AppConfig:
        raw = os.environ.get(ENV)
        if not raw:
            raise RuntimeError(
                f"{ENV} is not set: this app is started by benchmarks/harness (see benchmarks/README.md)"
            )
        return cls(**json.loads(raw))

    @property
    def queue(self) -> str:
        return f"cfy-bench-{self.run}"

    @property
    def prefix(self) -> str:
        return f"CFY-BENCH-{self.run}-"

    @property
    def pool_key(self) -> str:
        return "pool"

    def gated_options(self) -> dict[str, Any]:
        """The gated task's cachify options: the pool, plus whatever the run adds."""
        return {"pool_key": self.pool_key, "pool_max_size": self.pool_size, **_tuples(self.task_options)}

    def rated(self) -> dict[str, Any]:
        """The ``rated`` task's cachify options."""
        return _tuples(self.rated_options)

    def tenant(self) -> dict[str, Any]:
        """The ``tenant`` task's cachify options."""
        return _tuples(self.tenant_options)


def _tuples(options: dict[str, Any]) -> dict[str, Any]:
    # JSON has no tuples; pool_backoff is validated as one.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
