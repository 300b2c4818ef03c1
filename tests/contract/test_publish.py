"""Rows 14-16 of the contract: canvas, every publish path, and the embedded backend with a
broker whose workers may be other processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from cachify_core import CachifyError
from cachify_core.tasks import CachifyDuplicateError

from .frameworks import Framework
from .helpers import in_thread, send_first
from .probe import Probe
from .store import Store
from .table import PATHS, row, xfail_params

pytestmark = pytest.mark.timeout(60)

#: A canvas call that hangs today must fail the test within this, not block it.
APPLY_BOUND_S = 5.0


@row("14", ["group", "chain"])
def test_a_duplicate_in_a_canvas_raises_at_apply_time(
    framework: Framework, store: Store, variant: str
) -> None:
    probe = Probe()
    probe.block(42)
    check = framework.declare(probe.body(), once_key="once-{x}")
    done = framework.declare(probe.body())
    sending, holder = send_first(framework, probe, check, 42)  # 42 is held from here on
    members = [(check, 42), (check, 42)] if variant == "group" else [(check, 42), (done, 1)]
    apply = framework.group if variant == "group" else framework.chain
    with pytest.raises(CachifyDuplicateError) as info:
        in_thread(lambda: apply(members), APPLY_BOUND_S)
    assert info.value.holder_id == holder
    probe.release()
    framework.drain()
    sending.finish()
    assert probe.xs == [42]  # only the holder ran; nothing of the canvas was published
    assert framework.deliveries(check) == 1
    assert framework.deliveries(done) == 0


@row("15", PATHS)
def test_every_publish_path_applies_once(framework: Framework, store: Store, variant: str) -> None:
    probe = Probe()
    probe.block(1)
    task = framework.declare(probe.body(), once_key="once-{x}")
    sending, holder = send_first(framework, probe, task, 1)
    publish = framework.publish_paths()[variant]
    suppressed: list[str] = []
    try:
        handle = publish(task, 1)
    except CachifyDuplicateError as exc:  # a path with no handle to return raises instead
        suppressed.append(exc.holder_id)
    else:
        if handle is not None:
            suppressed.append(framework.handle_id(handle))
    assert suppressed in ([], [holder])
    probe.release()
    framework.drain()
    sending.finish()
    assert framework.deliveries(task) == 1  # the duplicate was never published
    assert probe.xs == [1]


@row("16-in-process")
def test_the_memory_backend_works_with_an_in_process_broker(framework: Framework, store: Store) -> None:
    probe = Probe()
    probe.block(1)
    task = framework.declare(probe.body(), once_key="once-{x}")
    sending, holder = send_first(framework, probe, task, 1)
    assert framework.handle_id(framework.send(task, 1)) == holder
    probe.release()
    framework.drain()
    sending.finish()
    assert probe.xs == [1]


# -- row 16, out-of-process brokers: objects only, no worker, nothing needs to listen ----------
def send_on_celery(url: str, queue: str) -> None:
    """A Celery app on the Redis broker, no worker."""
    from celery import Celery

    from cachify_celery import install

    app = Celery("remote", broker=url, set_as_current=False)
    install(app)
    app.conf.update(task_default_queue=queue, broker_connection_retry_on_startup=True)

    @app.task(name="contract.remote", shared=False, once_key="once-{x}")  # type: ignore[untyped-decorator]
    def task(x: int) -> int:
        return x

    try:
        task.delay(1)
    finally:
        app.close()


def send_on_dramatiq(url: str, queue: str) -> None:
    """A Dramatiq ``RedisBroker``, no worker."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    from cachify_dramatiq import CachifyMiddleware

    broker = RedisBroker(url=url, namespace=queue)
    broker.add_middleware(CachifyMiddleware())

    def remote(x: int) -> int:
        return x

    try:
        dramatiq.actor(actor_name="remote", broker=broker, once_key="once-{x}")(remote).send(1)
    finally:
        broker.close()


def send_on_taskiq(url: str, queue: str) -> None:
    """A Taskiq ``ListQueueBroker``, no worker."""
    import asyncio

    from taskiq_redis import ListQueueBroker

    from cachify_taskiq import CachifyMiddleware

    broker = ListQueueBroker(url, queue_name=queue).with_middlewares(CachifyMiddleware())

    async def remote(x: int) -> int:
        return x

    declared = broker.task(task_name="remote", once_key="once-{x}")(remote)

    async def send() -> None:
        await broker.startup()
        try:
            await declared.kiq(1)
        finally:
            await broker.shutdown()

    asyncio.run(send())


#: Declare a task with a ``once_key`` on an out-of-process broker at this URL and queue, send it.
REMOTE_SENDS: dict[str, Callable[[str, str], None]] = {
    "celery": send_on_celery,
    "dramatiq": send_on_dramatiq,
    "taskiq": send_on_taskiq,
}


class Remote:
    """A broker whose workers would be other processes, on the test's Redis (db 4), its keys
    named after a queue of this test."""

    def __init__(self, name: str, redis_url: str) -> None:
        from ..celery.support import db_url

        self.send = REMOTE_SENDS[name]
        self.url = db_url(redis_url, 4)
        self.queue = f"contract-remote-{uuid.uuid4().hex[:8]}"

    def published(self) -> int:
        """Messages in the broker's Redis database: entries of its lists and hashes (queues and
        message stores; a queue binding is a set, and is not a message)."""
        import redis

        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            count = 0
            for key in client.scan_iter(match=f"*{self.queue}*"):
                kind = client.type(key)
                count += client.llen(key) if kind == "list" else client.hlen(key) if kind == "hash" else 0
            return count
        finally:
            client.close()

    def clear(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            for key in list(client.scan_iter(match=f"*{self.queue}*")):
                client.delete(key)
        finally:
            client.close()


@pytest.fixture
def remote(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Remote]:
    broker = Remote(str(request.param), redis_url)
    try:
        yield broker
    finally:
        broker.clear()


@pytest.mark.contract
@pytest.mark.parametrize(("remote", "store"), xfail_params("16-remote"), indirect=True)
def test_the_memory_backend_refuses_an_out_of_process_broker(remote: Remote, store: Store) -> None:
    with pytest.raises(CachifyError) as info:
        remote.send(remote.url, remote.queue)
    assert "init_cachify(url=" in str(info.value)
    assert remote.published() == 0
