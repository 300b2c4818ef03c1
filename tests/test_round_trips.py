"""Round trips of a gated task on a single Redis server, counted by the server itself
(``INFO stats`` ``total_reads_processed``: one per request a client sends, a pipeline being one
request): with ``once_key`` + ``pool_key`` + ``cache_key``, the claim at send is 1, the
admission 1 and the finish 1 — 3 in all; a parked task adds its park (and its hold's
no-expiry) and its hand-over's admission. Counts, not timings: nothing here depends on speed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cachify_core import Cachify
from cachify_core.backends.base import Handover
from cachify_core.tasks import Delivery, TaskPolicy, Verdict, parse_task_options

from .conftest import require_server_binary
from .servers import PrivateServer

TASK = "tasks.sync"


def sync_order(order_id: int) -> int:
    return order_id


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateServer]:
    private = PrivateServer(require_server_binary()).start()
    try:
        yield private
    finally:
        private.stop()


@pytest.fixture
def counted(server: PrivateServer) -> Iterator[tuple[Cachify, redis.Redis]]:
    c = Cachify(url=server.url, prefix="RT-")
    observer = redis.Redis.from_url(server.url)
    observer.flushall()
    try:
        yield c, observer
    finally:
        observer.close()


class Reads:
    """Requests the server served between two readings, less the readings' own INFO."""

    def __init__(self, observer: redis.Redis) -> None:
        self.observer = observer
        self.last = self._now()

    def _now(self) -> int:
        return int(self.observer.info("stats")["total_reads_processed"])

    def since(self) -> int:
        now = self._now()
        spent, self.last = now - self.last - 1, now
        return spent


def policy(c: Cachify, **raw: Any) -> TaskPolicy:
    return TaskPolicy(parse_task_options(TASK, sync_order, raw), c)


ALL = {"once_key": "sync-{order_id}", "pool_key": "erp", "pool_max_size": 1, "cache_key": "order-{order_id}"}


def test_a_gated_task_costs_three_round_trips(counted: tuple[Cachify, redis.Redis]) -> None:
    c, observer = counted
    p = policy(c, **ALL)
    sent: list[Handover] = []
    p.claim("warm", (0,), {})  # connections open, scripts loaded: not counted below
    d0 = Delivery(p, "warm", (0,), {}, payload=lambda: b"{}", publish=sent.extend)
    d0.admit()
    d0.succeeded(0)
    reads = Reads(observer)
    assert not p.claim("t1", (1,), {}).duplicate
    assert reads.since() == 1  # the claim
    d = Delivery(p, "t1", (1,), {}, payload=lambda: b"{}", publish=sent.extend)
    assert d.admit().verdict is Verdict.RUN
    assert reads.since() == 1  # cache lookup + hold + slot, one batch
    d.succeeded(1)
    assert reads.since() == 1  # store + slot release + hold release, one batch


async def test_the_asyncio_twin_costs_the_same(counted: tuple[Cachify, redis.Redis]) -> None:
    c, observer = counted
    p = policy(c, **ALL)
    await p.aclaim("warm", (0,), {})
    d0 = Delivery(p, "warm", (0,), {})
    await d0.aadmit()
    await d0.asucceeded(0)
    reads = Reads(observer)
    await p.aclaim("t1", (1,), {})
    assert reads.since() == 1
    d = Delivery(p, "t1", (1,), {})
    assert (await d.aadmit()).verdict is Verdict.RUN
    assert reads.since() == 1
    await d.asucceeded(1)
    assert reads.since() == 1


def test_a_hit_and_a_parked_task(counted: tuple[Cachify, redis.Redis]) -> None:
    c, observer = counted
    p = policy(c, **ALL)
    sent: list[Handover] = []

    def make(task_id: str, x: int, reservation: str | None = None) -> Delivery:
        body = json.dumps({"id": task_id, "x": x}).encode()
        return Delivery(
            p, task_id, (x,), {}, reservation=reservation, payload=lambda: body, publish=sent.extend
        )

    p.claim("warm", (0,), {})
    warm = make("warm", 0)
    warm.admit()
    warm.succeeded(0)
    reads = Reads(observer)
    p.claim("t9", (0,), {})
    assert make("t9", 0).admit().verdict is Verdict.CACHED
    hit = reads.since()
    p.claim("t1", (1,), {})
    running = make("t1", 1)
    running.admit()
    p.claim("t2", (2,), {})
    reads.since()
    assert make("t2", 2).admit().verdict is Verdict.PARKED
    parked = reads.since()
    running.succeeded(1)  # hands the slot over to t2
    reads.since()
    (handed,) = sent
    copy = make("t2", 2, reservation=handed.entry_id)
    assert copy.admit().verdict is Verdict.RUN
    assert reads.since() == 1
    copy.succeeded(2)
    assert reads.since() == 1
    # A hit: claim 1 + batch 1 + the slot the batch took given back 1 + the claim given back 1.
    assert hit == 4
    # A park: the batch 1 (which parked it) + the hold's no-expiry 1.
    assert parked == 2
