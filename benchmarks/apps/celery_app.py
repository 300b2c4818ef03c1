# mypy: disable-error-code="untyped-decorator"
"""The Celery worker app: ``celery -A apps.celery_app worker`` (``benchmarks/`` on the path).

Tasks (queue ``cfy-bench-<run>``): ``bench.gated`` carries the run's ``pool_key`` (and any other
cachify options of the run); ``bench.plain`` has none (the dedicated-queue ceiling, capped by
the worker's ``-c`` instead); ``bench.relay(i, n)`` has none either and, its body done, sends
``relay(i + pool_size, n)`` (the hand-over floor: ``pool_size`` chains, each task's successor
published by the run before it, as a hand-over is); ``bench.rated(i)`` and ``bench.tenant(i, tenant)`` carry the run's
``rated_options`` / ``tenant_options`` (rate limits) and record Celery's retry counter
(``self.request.retries``). All run :func:`apps.observe.body`.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task
from celery.signals import worker_ready

from cachify_celery import install
from cachify_core import init_cachify

from . import observe
from .config import ENV, AppConfig


@dataclass
class CeleryApp:
    config: AppConfig
    app: Any
    tasks: dict[str, Any]

    def send(self, task: str, i: int, *args: Any) -> None:
        # task ids that name the index: a lost or duplicated index is one grep in the worker logs
        self.tasks[task].apply_async((i, *args), task_id=f"{task}-{i}-{uuid.uuid4().hex[:12]}")

    def close(self) -> None:
        self.app.close()


def build(config: AppConfig) -> CeleryApp:
    fw = config.framework_options
    cachify = init_cachify(url=config.store_url, prefix=config.prefix, is_global=False)
    app = Celery(f"cfy-bench-{config.run}", broker=config.broker_url, set_as_current=False)
    install(app, cachify=cachify)
    transport: dict[str, Any] = {}
    if "visibility_timeout_s" in fw:
        transport["visibility_timeout"] = fw["visibility_timeout_s"]
        # kombu sweeps unacked messages every interval x throttle seconds (10 x 10 by default):
        # a dead worker's messages come back within visibility_timeout + 2 s instead of + 100 s.
        transport["unacked_restore_interval"] = 2
        transport["unacked_restore_throttle"] = 1
        # The lock of that sweep lives unacked_mutex_expire (300 s by default): held by a worker
        # when the broker dies, it survives the restart (append-only) and stops every restore
        # until it expires. Production's hour-long visibility_timeout hides it; 20 s does not.
        transport["unacked_mutex_expire"] = 10
    app.conf.update(
        task_default_queue=config.queue,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a broker restart is waited out, not fatal
        broker_transport_options=transport,
    )
    if "prefetch_multiplier" in fw:  # pool_utilization.py --celery-prefetch-multiplier
        app.conf.worker_prefetch_multiplier = fw["prefetch_multiplier"]
    late = {"acks_late": True, "reject_on_worker_lost": True} if fw.get("acks_late") else {}

    @app.task(name="bench.gated", shared=False, **late, **config.gated_options())
    def gated(i: int) -> int:
        return observe.body(config.observe_url, config.run, i, config.body_s)

    @app.task(name="bench.plain", base=Task, shared=False, **late)
    def plain(i: int) -> int:
        return observe.body(config.observe_url, config.run, i, config.body_s)

    @app.task(name="bench.relay", base=Task, shared=False, **late)
    def relay(i: int, n: int) -> int:
        observe.body(config.observe_url, config.run, i, config.body_s)
        after = i + config.pool_size
        if after < n:
            relay.apply_async((after, n), task_id=f"relay-{after}-{uuid.uuid4().hex[:12]}")
        return i

    @app.task(name="bench.rated", bind=True, shared=False, **late, **config.rated())
    def rated(self: Any, i: int) -> int:
        return observe.body(config.observe_url, config.run, i, config.body_s, self.request.retries or 0)

    @app.task(name="bench.tenant", bind=True, shared=False, **late, **config.tenant())
    def tenant(self: Any, i: int, tenant: str) -> int:
        return observe.body(
            config.observe_url, config.run, i, config.body_s, self.request.retries or 0, tenant
        )

    return CeleryApp(
        config, app, {"gated": gated, "plain": plain, "relay": relay, "rated": rated, "tenant": tenant}
    )


def _main() -> Any:
    built = build(AppConfig.from_env())
    if os.environ.get("CFY_BENCH_CACHIFY_DEBUG"):  # every admission verdict and hand-over, logged
        logging.getLogger("cachify").setLevel(logging.DEBUG)

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        observe.ready(built.config.observe_url, built.config.run)

    return built.app


if os.environ.get(ENV):  # a worker process: `celery -A apps.celery_app worker`
    app = _main()
