# mypy: disable-error-code="untyped-decorator"
"""One driver per framework, behind one protocol, so each contract row is written once.

Drivers use only what a user of cachify uses: the task decorator and its options, the
framework's send calls (with per-message overrides), its results, its public signals and
middleware hooks, and its broker objects. They never import an integration's internals, so the
suite outlives a rewrite of them.

| driver | broker | worker | "queued" means |
|---|---|---|---|
| ``celery-eager`` | none: ``task_always_eager`` (results stored in Redis) | the sending thread | nothing: a send runs at once |
| ``celery-worker`` | Redis (the test server, a queue of its own) | ``celery.contrib.testing.worker.start_worker``, threads pool | sent before :meth:`start` |
| ``dramatiq`` | ``StubBroker`` + ``Results`` (``StubBackend``) | ``dramatiq.Worker`` | sent before :meth:`start` |
| ``taskiq`` | an ``InMemoryBroker`` whose deliveries wait for :meth:`start` and a concurrency cap | the broker's own loop (a thread of the test) and thread pool | sent before :meth:`start` |

Every driver reads the global Cachify instance (``init_cachify``), as a user's app does; the
suite's ``store`` fixture installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from .probe import WAIT_S, Ctx

Body = Callable[[Ctx, int], Any]


@dataclass(frozen=True)
class Outcome:
    """How a task ended, as the framework's results report it.

    ``kind``: ``"value"`` (``value`` is the result), ``"error"`` (``error`` is the exception's
    class name, ``text`` its message) or ``"none"`` (no result: skipped, dropped, or not done
    within the wait)."""

    kind: str
    value: Any = None
    error: str = ""
    text: str = ""


class RetryRequested(Exception):
    """Raised by a body to have Dramatiq's Retries / Taskiq's retry middleware retry it."""


class Framework(Protocol):
    name: str
    #: Whether a sent message waits in a queue until :meth:`start` (False: it runs at send).
    queued: bool

    def declare(self, body: Body, *, name: str | None = None, retries: int = 0, **options: Any) -> Any:
        """A task ``task(x: int)`` running ``body(ctx, x)``, with cachify ``options``;
        ``retries`` is the framework's retry budget (``ctx.retry()`` spends one)."""
        ...

    def task_name(self, task: Any) -> str: ...

    def send(self, task: Any, x: int, **overrides: Any) -> Any:
        """Send ``task(x)``; ``overrides`` are per-message options. Returns the handle."""
        ...

    def handle_id(self, handle: Any) -> str: ...

    def start(self, concurrency: int = 4) -> None:
        """Start consuming (once): queued messages run, at most ``concurrency`` at a time."""
        ...

    def drain(self, timeout_s: float = WAIT_S) -> None:
        """Wait until every message sent so far (retries and requeues included) was processed."""
        ...

    def outcome(self, handle: Any, timeout_s: float = WAIT_S) -> Outcome: ...

    def deliveries(self, task: Any) -> int:
        """How many messages of ``task`` reached a worker (run, skipped or requeued there)."""
        ...

    def failing_publish(self) -> contextlib.AbstractContextManager[None]:
        """While active, the broker's publish raises ``ConnectionError``."""
        ...

    def publish_paths(self) -> dict[str, Callable[[Any, int], Any]]:
        """Every way to publish ``task(x)``: name → call returning a handle or ``None``."""
        ...

    def group(self, members: list[tuple[Any, int]]) -> Any: ...

    def chain(self, members: list[tuple[Any, int]]) -> Any: ...

    def close(self) -> None: ...


def unique_name(row: str = "t") -> str:
    return f"contract_{row}_{uuid.uuid4().hex[:8]}"


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        time.sleep(0.01)


# -- Celery -----------------------------------------------------------------------------------
class CeleryDriver:
    """Celery with ``cachify_celery.install(app)``; eager, or an in-process worker."""

    def __init__(self, redis_url: str, eager: bool) -> None:
        from celery import Celery
        from celery import signals as celery_signals

        from cachify_celery import install

        from ..celery.support import RedisDbs

        dbs = RedisDbs(redis_url)
        self.name = "celery-eager" if eager else "celery-worker"
        self.queued = not eager
        self.eager = eager
        self.queue = unique_name("queue")
        self.app = Celery(self.queue, broker=dbs.broker, backend=dbs.backend, set_as_current=False)
        install(self.app)
        self.app.conf.update(
            task_always_eager=eager,
            task_store_eager_result=True,
            task_serializer="json",
            task_default_queue=self.queue,
            result_expires=600,
            worker_prefetch_multiplier=1,
            worker_hijack_root_logger=False,
            broker_connection_retry_on_startup=True,
            # kombu sets its BRPOP timeout from polling_interval: the worker stops in ~0.1 s, not 1 s
            broker_transport_options={"polling_interval": 0.05},
        )
        self._names: set[str] = set()
        self._lock = threading.Lock()
        self._published = 0
        self._finished = 0
        self._delivered: dict[str, int] = {}
        self._signals = celery_signals
        celery_signals.after_task_publish.connect(self._on_publish, weak=False)
        celery_signals.task_prerun.connect(self._on_prerun, weak=False)
        celery_signals.task_postrun.connect(self._on_end, weak=False)
        celery_signals.task_revoked.connect(self._on_revoked, weak=False)
        self._worker: contextlib.AbstractContextManager[Any] | None = None
        self._controller: Any = None

    # signals: how the driver sees publishes and deliveries without touching cachify
    def _on_publish(self, sender: Any = None, headers: Any = None, **_: Any) -> None:
        if (headers or {}).get("task") in self._names:
            with self._lock:
                self._published += 1

    def _on_prerun(self, sender: Any = None, **_: Any) -> None:
        name = getattr(sender, "name", None)
        if name in self._names:
            with self._lock:
                self._delivered[name] = self._delivered.get(name, 0) + 1

    def _on_end(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "name", None) in self._names:
            with self._lock:
                self._finished += 1

    def _on_revoked(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        if getattr(request, "task", None) in self._names:
            with self._lock:
                self._finished += 1

    def declare(self, body: Body, *, name: str | None = None, retries: int = 0, **options: Any) -> Any:
        name = name or unique_name()
        self._names.add(name)

        @self.app.task(name=name, shared=False, bind=True, max_retries=retries, **options)
        def task(self: Any, x: int) -> Any:
            def retry() -> NoReturn:
                raise self.retry(countdown=0.01)

            return body(Ctx(self.request.id, self.request.retries or 0, retry), x)

        # Bind it here, on one thread: app.task returns a lazy proxy, and when four sender
        # threads evaluate it first, Celery's _task_from_fun hands one of them the task before
        # bind() set its request_stack (AttributeError in build_tracer, seen once in CI).
        task._get_current_object()
        if self._controller is not None:  # the consumer learns tasks at start; teach it this one
            self._controller.consumer.update_strategies()
        return task

    def task_name(self, task: Any) -> str:
        return str(task.name)

    def send(self, task: Any, x: int, **overrides: Any) -> Any:
        return task.apply_async((x,), **overrides)

    def handle_id(self, handle: Any) -> str:
        return str(handle.id)

    def start(self, concurrency: int = 4) -> None:
        if self.eager or self._worker is not None:
            return
        from celery.contrib.testing.worker import start_worker

        self._worker = start_worker(
            self.app,
            pool="threads",
            concurrency=concurrency,
            perform_ping_check=False,
            shutdown_timeout=10,
            loglevel="WARNING",
        )
        self._controller = self._worker.__enter__()

    def drain(self, timeout_s: float = WAIT_S) -> None:
        if self.eager:
            return  # every send ran when it was made
        self.start()

        def settled() -> bool:
            with self._lock:
                return self._published == self._finished

        _wait(settled, f"{self.name}: every published message processed", timeout_s)

    def outcome(self, handle: Any, timeout_s: float = WAIT_S) -> Outcome:
        result = handle
        deadline = time.monotonic() + timeout_s
        while True:
            state = result.state
            if state == "SUCCESS":
                return Outcome("value", result.result)
            if state == "FAILURE":
                exc = result.result
                return Outcome("error", error=type(exc).__name__, text=str(exc))
            if state == "IGNORED" or time.monotonic() > deadline:
                return Outcome("none")
            time.sleep(0.01)

    def deliveries(self, task: Any) -> int:
        with self._lock:
            return self._delivered.get(task.name, 0)

    @contextlib.contextmanager
    def failing_publish(self) -> Iterator[None]:
        amqp = self.app.amqp

        def refuse(*args: Any, **kwargs: Any) -> NoReturn:
            raise ConnectionError("broker down (contract test)")

        amqp.send_task_message = refuse  # the app's own publish step, on this app only
        try:
            yield
        finally:
            del amqp.send_task_message  # back to Celery's (a cached property)

    def publish_paths(self) -> dict[str, Callable[[Any, int], Any]]:
        from celery.beat import ScheduleEntry, Scheduler

        def beat(task: Any, x: int) -> None:
            scheduler = Scheduler(self.app, lazy=True)
            entry = ScheduleEntry(name="contract", task=task.name, schedule=60.0, args=(x,), app=self.app)
            scheduler.apply_entry(entry)  # as beat does when the entry is due (logs, never raises)

        return {
            "delay": lambda task, x: task.delay(x),
            "apply_async": lambda task, x: task.apply_async((x,)),
            "signature": lambda task, x: task.signature((x,)).apply_async(),
            "send_task": lambda task, x: self.app.send_task(task.name, (x,)),
            "beat": beat,
        }

    def group(self, members: list[tuple[Any, int]]) -> Any:
        from celery import group

        return group(task.s(x) for task, x in members).apply_async()

    def chain(self, members: list[tuple[Any, int]]) -> Any:
        from celery import chain

        return chain(*(task.si(x) for task, x in members)).apply_async()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.__exit__(None, None, None)
            self._worker = None
        for signal, handler in (
            (self._signals.after_task_publish, self._on_publish),
            (self._signals.task_prerun, self._on_prerun),
            (self._signals.task_postrun, self._on_end),
            (self._signals.task_revoked, self._on_revoked),
        ):
            signal.disconnect(handler)
        # AsyncResult.__del__ unsubscribes from the result backend: collect them while it is up
        gc.collect()


# -- Dramatiq ---------------------------------------------------------------------------------
class DramatiqDriver:
    """A ``StubBroker`` with ``CachifyMiddleware``, ``CurrentMessage`` and ``Results``."""

    name = "dramatiq"
    queued = True

    def __init__(self) -> None:
        import dramatiq
        from dramatiq import broker as broker_module
        from dramatiq.brokers.stub import StubBroker
        from dramatiq.middleware import CurrentMessage, Middleware
        from dramatiq.results import Results
        from dramatiq.results.backends import StubBackend

        from cachify_dramatiq import CachifyMiddleware

        driver = self

        class Deliveries(Middleware):  # type: ignore[misc]
            def before_process_message(self, broker: Any, message: Any) -> None:
                with driver._lock:
                    driver._delivered[message.actor_name] = driver._delivered.get(message.actor_name, 0) + 1

        self._lock = threading.Lock()
        self._delivered: dict[str, int] = {}
        self.results = StubBackend()
        self.broker = StubBroker()
        self.broker.emit_after("process_boot")
        self.broker.add_middleware(Deliveries())
        self.broker.add_middleware(CachifyMiddleware())
        self.broker.add_middleware(CurrentMessage())
        self.broker.add_middleware(Results(backend=self.results))
        self._previous = broker_module.global_broker
        dramatiq.set_broker(self.broker)
        self._current = CurrentMessage
        self._worker: Any = None

    def declare(self, body: Body, *, name: str | None = None, retries: int = 0, **options: Any) -> Any:
        import dramatiq

        current = self._current

        def task(x: int) -> Any:
            message = current.get_current_message()
            assert message is not None

            def retry() -> NoReturn:
                raise RetryRequested(f"retry of {message.message_id}")

            return body(Ctx(message.message_id, int(message.options.get("retries", 0)), retry), x)

        return dramatiq.actor(
            actor_name=name or unique_name(),
            broker=self.broker,
            max_retries=retries,
            min_backoff=10,
            max_backoff=20,
            store_results=True,
            **options,
        )(task)

    def task_name(self, task: Any) -> str:
        return str(task.actor_name)

    def send(self, task: Any, x: int, **overrides: Any) -> Any:
        if overrides:
            return task.send_with_options(args=(x,), **overrides)
        return task.send(x)

    def handle_id(self, handle: Any) -> str:
        return str(handle.message_id)

    def start(self, concurrency: int = 4) -> None:
        import dramatiq

        if self._worker is None:
            self._worker = dramatiq.Worker(self.broker, worker_threads=concurrency, worker_timeout=50)
            self._worker.start()

    def drain(self, timeout_s: float = WAIT_S) -> None:
        self.start()
        self.broker.join("default", timeout=int(timeout_s * 1000), fail_fast=False)
        self._worker.join()

    def outcome(self, handle: Any, timeout_s: float = WAIT_S) -> Outcome:
        from dramatiq.results import ResultFailure, ResultMissing, ResultTimeout

        try:
            value = handle.get_result(
                backend=self.results, block=timeout_s > 0, timeout=int(timeout_s * 1000)
            )
        except ResultFailure as exc:
            return Outcome("error", error=str(exc.orig_exc_type), text=str(exc.orig_exc_msg))
        except (ResultTimeout, ResultMissing):
            return Outcome("none")
        return Outcome("none") if value is None else Outcome("value", value)

    def deliveries(self, task: Any) -> int:
        with self._lock:
            return self._delivered.get(task.actor_name, 0)

    @contextlib.contextmanager
    def failing_publish(self) -> Iterator[None]:
        import queue

        class Refusing(queue.Queue[Any]):
            def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
                raise ConnectionError("broker down (contract test)")

        original = self.broker.queues["default"]
        self.broker.queues["default"] = Refusing()  # the stub's transport: its queue refuses
        try:
            yield
        finally:
            self.broker.queues["default"] = original

    def publish_paths(self) -> dict[str, Callable[[Any, int], Any]]:
        import dramatiq

        return {
            "send": lambda task, x: task.send(x),
            "send_with_options": lambda task, x: task.send_with_options(args=(x,)),
            "pipeline": lambda task, x: dramatiq.pipeline([task.message(x)], broker=self.broker).run(),
            "group": lambda task, x: dramatiq.group([task.message(x)], broker=self.broker).run(),
        }

    def group(self, members: list[tuple[Any, int]]) -> Any:
        import dramatiq

        return dramatiq.group([task.message(x) for task, x in members], broker=self.broker).run()

    def chain(self, members: list[tuple[Any, int]]) -> Any:
        import dramatiq

        return dramatiq.pipeline([task.message(x) for task, x in members], broker=self.broker).run()

    def close(self) -> None:
        from dramatiq import broker as broker_module

        if self._worker is not None:
            self._worker.stop()
        self.broker.flush_all()
        self.broker.close()
        broker_module.global_broker = self._previous


# -- Taskiq -----------------------------------------------------------------------------------
class TaskiqDriver:
    """An ``InMemoryBroker`` with ``CachifyMiddleware`` and ``SimpleRetryMiddleware``, on an
    event loop in a thread of the test, so the contract's calls stay blocking."""

    name = "taskiq"
    queued = True

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="contract-taskiq", daemon=True)
        self._thread.start()
        self._lock = threading.Lock()
        self._delivered: dict[str, int] = {}
        self.broker: Any = self.call(self._build())

    def call(self, coro: Coroutine[Any, Any, Any], timeout_s: float = WAIT_S * 2) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    async def _build(self) -> Any:
        from taskiq import InMemoryBroker, SimpleRetryMiddleware

        from cachify_taskiq import CachifyMiddleware

        driver = self

        class HeldInMemoryBroker(InMemoryBroker):
            """Deliveries wait until the test starts consuming, then run at most ``concurrency``
            at a time; ``refusing`` makes the publish itself fail."""

            def __init__(self) -> None:
                super().__init__(max_stored_results=-1, sync_tasks_pool_size=8)
                self.consuming = asyncio.Event()
                self.slots = asyncio.Semaphore(4)
                self.refusing = False

            async def kick(self, message: Any) -> None:
                if self.refusing:
                    raise ConnectionError("broker down (contract test)")
                if self.find_task(message.task_name) is None:
                    await super().kick(message)  # Taskiq's own error for an unknown task
                    return
                delivery = asyncio.create_task(self._deliver(message))
                self._running_tasks.add(delivery)
                delivery.add_done_callback(self._running_tasks.discard)

            async def _deliver(self, message: Any) -> None:
                await self.consuming.wait()
                async with self.slots:
                    with driver._lock:
                        name = message.task_name
                        driver._delivered[name] = driver._delivered.get(name, 0) + 1
                    await self.receiver.callback(message=message.message)

        broker = HeldInMemoryBroker().with_middlewares(
            CachifyMiddleware(), SimpleRetryMiddleware(default_retry_count=3)
        )
        await broker.startup()
        return broker

    def declare(self, body: Body, *, name: str | None = None, retries: int = 0, **options: Any) -> Any:
        from taskiq import Context, TaskiqDepends

        def task(x: int, context: Context = TaskiqDepends(Context)) -> Any:  # noqa: B008 (Taskiq DI)
            message = context.message

            def retry() -> NoReturn:
                raise RetryRequested(f"retry of {message.task_id}")

            return body(Ctx(message.task_id, int(message.labels.get("_retries", 0)), retry), x)

        # resolved here: this module's annotations are strings, and Taskiq reads them at declaration
        task.__annotations__ = {"x": int, "context": Context, "return": Any}
        labels = dict(options)
        if retries:
            labels.update(retry_on_error=True, max_retries=retries)
        return self.broker.task(task_name=name or unique_name(), **labels)(task)

    def task_name(self, task: Any) -> str:
        return str(task.task_name)

    def send(self, task: Any, x: int, **overrides: Any) -> Any:
        if overrides:
            return self.call(task.kicker().with_labels(**overrides).kiq(x))
        return self.call(task.kiq(x))

    def handle_id(self, handle: Any) -> str:
        return str(handle.task_id)

    def start(self, concurrency: int = 4) -> None:
        async def open_() -> None:
            if not self.broker.consuming.is_set():
                self.broker.slots = asyncio.Semaphore(concurrency)
                self.broker.consuming.set()

        self.call(open_())

    def drain(self, timeout_s: float = WAIT_S) -> None:
        self.start()

        async def idle() -> None:
            deadline = time.monotonic() + timeout_s
            while self.broker._running_tasks:  # the deliveries this test broker keeps
                assert time.monotonic() < deadline, f"taskiq: deliveries still running after {timeout_s}s"
                await asyncio.sleep(0.01)

        self.call(idle(), timeout_s + 5)

    def outcome(self, handle: Any, timeout_s: float = WAIT_S) -> Outcome:
        from taskiq.exceptions import TaskiqResultTimeoutError

        async def read() -> Outcome:
            try:
                result = await handle.wait_result(check_interval=0.01, timeout=max(timeout_s, 0.01))
            except TaskiqResultTimeoutError:
                return Outcome("none")
            if result.is_err:
                return Outcome("error", error=type(result.error).__name__, text=str(result.error))
            return Outcome("value", result.return_value)

        return self.call(read(), timeout_s + 5)  # type: ignore[no-any-return]

    def deliveries(self, task: Any) -> int:
        with self._lock:
            return self._delivered.get(task.task_name, 0)

    @contextlib.contextmanager
    def failing_publish(self) -> Iterator[None]:
        self.broker.refusing = True
        try:
            yield
        finally:
            self.broker.refusing = False

    def publish_paths(self) -> dict[str, Callable[[Any, int], Any]]:
        from taskiq import TaskiqScheduler
        from taskiq.schedule_sources import LabelScheduleSource
        from taskiq.scheduler.scheduled_task import ScheduledTask

        def scheduler(task: Any, x: int) -> None:
            source = LabelScheduleSource(self.broker)
            scheduled = ScheduledTask(
                task_name=task.task_name, labels=dict(task.labels), args=[x], kwargs={}, cron="* * * * *"
            )
            # what `taskiq scheduler` does when the schedule is due (the kick it makes)
            self.call(TaskiqScheduler(self.broker, [source]).on_ready(source, scheduled))

        return {
            "kiq": lambda task, x: self.call(task.kiq(x)),
            "kicker": lambda task, x: self.call(task.kicker().kiq(x)),
            "scheduler": scheduler,
        }

    def group(self, members: list[tuple[Any, int]]) -> Any:
        raise NotImplementedError("taskiq has no canvas")

    def chain(self, members: list[tuple[Any, int]]) -> Any:
        raise NotImplementedError("taskiq has no canvas")

    def close(self) -> None:
        async def stop() -> None:
            self.broker.consuming.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.broker.wait_all(), WAIT_S)
            await self.broker.shutdown()

        try:
            self.call(stop(), WAIT_S + 5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(WAIT_S)
            if not self.loop.is_running():
                self.loop.close()


FRAMEWORKS = ["celery-eager", "celery-worker", "dramatiq", "taskiq"]


def make(name: str, redis_url: str) -> Framework:
    if name == "celery-eager":
        return CeleryDriver(redis_url, eager=True)
    if name == "celery-worker":
        return CeleryDriver(redis_url, eager=False)
    if name == "dramatiq":
        return DramatiqDriver()
    if name == "taskiq":
        return TaskiqDriver()
    raise ValueError(f"no framework driver {name!r}; known: {FRAMEWORKS}")
