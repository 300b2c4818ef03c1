"""The embedded in-memory backend coordinates one process: with a broker whose workers are
other processes, cachify refuses it at send and when a worker boots, naming the fix
(``init_cachify(url=...)``), instead of silently deduplicating nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker

from cachify_core import CachifyInitError, init_cachify
from cachify_dramatiq import CachifyMiddleware, CachifySetupError

from .conftest import ROOT, WORKER_STARTUP_S, stop_group
from .worker_app import REDIS_URL_ENV

FIX = r"init_cachify\(url='redis://\.\.\.'\)"


@pytest.fixture
def memory_redis_broker(redis_url: str) -> Iterator[RedisBroker]:
    broker = RedisBroker(url=redis_url)  # type: ignore[no-untyped-call]
    broker.add_middleware(CachifyMiddleware(cachify=init_cachify(is_global=False)))
    try:
        yield broker
    finally:
        broker.close()


@pytest.mark.parametrize(
    "options", [{"once_key": "k-{x}"}, {"pool_key": "p", "pool_max_size": 1}, {"cache_key": "c-{x}"}]
)
def test_refused_at_send(memory_redis_broker: RedisBroker, options: dict[str, object]) -> None:
    @dramatiq.actor(broker=memory_redis_broker, **options)
    def job(x: int) -> None: ...

    with pytest.raises(CachifyInitError, match=rf"task 'job': .*in-memory backend.*{FIX}") as info:
        job.send(1)
    assert isinstance(info.value, CachifySetupError)
    assert memory_redis_broker.client.llen("dramatiq:default") == 0


def test_an_actor_without_options_still_sends(memory_redis_broker: RedisBroker) -> None:
    @dramatiq.actor(broker=memory_redis_broker, queue_name="cachify-memory-plain")
    def plain(x: int) -> None: ...

    try:
        plain.send(1)
        with pytest.raises(CachifySetupError, match=FIX):  # an override turns cachify on
            plain.send_with_options(args=(1,), once_key="k-{x}")
        assert memory_redis_broker.client.llen("dramatiq:cachify-memory-plain") == 1
    finally:
        memory_redis_broker.flush("cachify-memory-plain")


def test_refused_at_worker_boot(memory_redis_broker: RedisBroker) -> None:
    @dramatiq.actor(broker=memory_redis_broker, once_key="k-{x}")
    def job(x: int) -> None: ...

    worker = dramatiq.Worker(memory_redis_broker, worker_threads=1)
    with pytest.raises(CachifySetupError, match=rf"task 'job': .*{FIX}"):
        worker.start()
    assert worker.workers == []  # no thread was started


def test_the_dramatiq_command_does_not_start(redis_url: str) -> None:
    env = dict(os.environ, **{REDIS_URL_ENV: redis_url})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    group = subprocess.Popen(
        [str(Path(sys.executable).with_name("dramatiq")), "tests.dramatiq.memory_app:broker",
         "--processes", "1", "--threads", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = group.communicate(timeout=WORKER_STARTUP_S)
    finally:
        stop_group(group)
    assert group.returncode != 0
    assert "CachifySetupError" in stderr.decode()
    assert "init_cachify(url='redis://...')" in stderr.decode()
