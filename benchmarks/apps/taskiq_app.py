"""The Taskiq worker app: ``taskiq worker apps.taskiq_app:broker`` (``benchmarks/`` on the path).

A ``RedisStreamBroker`` on the stream ``cfy-bench-<run>``. Tasks: ``bench:gated`` carries the
run's ``pool_key`` (and any other cachify options of the run); ``bench:plain`` has none (the
dedicated-worker ceiling, capped by ``--max-async-tasks`` instead); ``bench:relay(i, n)`` has none
either and, its body done, sends ``relay(i + pool_size, n)`` (the hand-over floor of
``benchmarks/pool_utilization.py``; async, its body in a thread pool of its own); ``bench:rated(i)`` and
``bench:tenant(i, tenant)`` carry the run's ``rated_options`` / ``tenant_options`` (rate limits)
and record Taskiq's retry counter (the ``_retries`` label; absent: 0). All are sync functions
(``time.sleep`` bodies), so Taskiq runs them in its thread pool: a worker's slots are
``min(--max-async-tasks, --max-threadpool-threads)``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from taskiq import Context, TaskiqDepends, TaskiqEvents, TaskiqState
from taskiq_redis import RedisStreamBroker

from cachify_core import init_cachify
from cachify_taskiq import CachifyMiddleware

from . import observe
from .config import ENV, AppConfig

#: Longest one send may take from the harness before it counts as failed.
SEND_TIMEOUT_S = 30.0


@dataclass
class TaskiqApp:
    config: AppConfig
    broker: Any
    tasks: dict[str, Any]
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def _run(self, coro: Any) -> Any:
        """Run ``coro`` on this app's own event loop (one thread, started on first use)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
            self._thread.start()
            asyncio.run_coroutine_threadsafe(self.broker.startup(), self._loop).result(SEND_TIMEOUT_S)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(SEND_TIMEOUT_S)

    def send(self, task: str, i: int, *args: Any) -> None:
        self._run(self.tasks[task].kiq(i, *args))

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.broker.shutdown(), self._loop).result(SEND_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)


def build(config: AppConfig) -> TaskiqApp:
    fw = config.framework_options
    cachify = init_cachify(url=config.store_url, prefix=config.prefix, is_global=False)
    broker = RedisStreamBroker(
        config.broker_url, queue_name=config.queue, idle_timeout=int(fw.get("idle_timeout_ms", 600_000))
    ).with_middlewares(CachifyMiddleware(cachify=cachify))
    obs, run, body_s = config.observe_url, config.run, config.body_s

    @broker.on_event(TaskiqEvents.WORKER_STARTUP)
    async def _ready(state: TaskiqState) -> None:
        observe.ready(obs, run)

    @broker.task("bench:gated", **config.gated_options())
    def gated(i: int) -> int:
        return observe.body(obs, run, i, body_s)

    @broker.task("bench:plain")
    def plain(i: int) -> int:
        return observe.body(obs, run, i, body_s)

    relay_threads = ThreadPoolExecutor(max_workers=config.pool_size)  # pool_size chains at most

    @broker.task("bench:relay")
    async def relay(i: int, n: int) -> int:
        # the hand-over floor (pool_utilization.py): the body in the thread pool, as a sync task's,
        # then the successor sent from the event loop, as cachify's middleware sends a hand-over
        await asyncio.get_running_loop().run_in_executor(relay_threads, observe.body, obs, run, i, body_s)
        if i + config.pool_size < n:
            await relay.kiq(i + config.pool_size, n)
        return i

    def rated(i: int, context: Context = TaskiqDepends(Context)) -> int:  # noqa: B008 (Taskiq DI)
        return observe.body(obs, run, i, body_s, int(context.message.labels.get("_retries", 0)))

    def tenant(i: int, tenant: str, context: Context = TaskiqDepends(Context)) -> int:  # noqa: B008
        return observe.body(obs, run, i, body_s, int(context.message.labels.get("_retries", 0)), tenant)

    # Taskiq reads the annotations at declaration: this module's are strings (postponed).
    rated.__annotations__ = {"i": int, "context": Context, "return": int}
    tenant.__annotations__ = {"i": int, "tenant": str, "context": Context, "return": int}
    rated_task = broker.task("bench:rated", **config.rated())(rated)
    tenant_task = broker.task("bench:tenant", **config.tenant())(tenant)
    return TaskiqApp(
        config,
        broker,
        {"gated": gated, "plain": plain, "relay": relay, "rated": rated_task, "tenant": tenant_task},
    )


if os.environ.get(ENV):  # a worker process: `taskiq worker apps.taskiq_app:broker`
    broker = build(AppConfig.from_env()).broker
