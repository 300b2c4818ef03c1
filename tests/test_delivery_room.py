"""The waiting room in the delivery lifecycle: a full pool parks the delivery, each release
hands the slot to the oldest parked one and gives its payload to the integration's publisher,
and the handed-over copy runs on the slot reserved for it — on both backends of the
``cachify`` fixture, blocking and asyncio."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import pytest

from cachify_core import Cachify, CachifyPoolFullError, init_cachify
from cachify_core.backends.base import Handover
from cachify_core.tasks import (
    ORIGIN_FIELD,
    REQUEUES_FIELD,
    Delivery,
    State,
    TaskPolicy,
    Verdict,
    delivery_name,
    handover,
    owed,
    parse_task_options,
    read_origin,
)

from .delivery_support import Broker, event, live
from .lost_reply import ReplyLosingProxy
from .servers import PrivateServer, require_server_binary

TASK = "tasks.job"


def job(x: int) -> int:
    return x


def policy(cachify: Cachify, **raw: Any) -> TaskPolicy:
    return TaskPolicy(parse_task_options(TASK, job, raw), cachify)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def slots(p: TaskPolicy) -> int:
    return p.cachify.sync_backend.pool_size(p.cachify.prefix + "p-pool")


def supports(cachify: Cachify) -> None:
    if not cachify.sync_backend.supports_waiting_room:
        pytest.skip("store without waiting rooms")


async def test_full_pool_parks_and_release_hands_over_in_order(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, pool_key="p", pool_max_size=1)
    broker = Broker()
    first = broker.delivery(p, "t0", 0)
    assert (await event(first, kind, "admit")).verdict is Verdict.RUN
    parked = [broker.delivery(p, f"t{i}", i) for i in (1, 2, 3)]
    for d in parked:
        decision = await event(d, kind, "admit")
        assert (decision.verdict, d.state) == (Verdict.PARKED, State.ENDED)
    stats = p.cachify.sync_backend.room_stats(p.cachify.prefix + "p-pool")
    assert stats.parked == 3
    order = []
    await event(first, kind, "succeeded", 0)
    for _ in range(3):
        assert len(broker.sent) == 1  # each release hands over exactly one: the oldest
        assert slots(p) == 1  # the reserved slot counts as taken
        copy = broker.redeliver(p)
        assert (await event(copy, kind, "admit")).verdict is Verdict.RUN
        order.append(copy.task_id)
        await event(copy, kind, "succeeded", 0)
    assert order == ["t1", "t2", "t3"]
    assert broker.sent == []
    assert slots(p) == 0
    assert p.cachify.sync_backend.room_stats(p.cachify.prefix + "p-pool").parked == 0


async def test_newcomer_cannot_take_a_reserved_slot(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, pool_key="p", pool_max_size=1)
    broker = Broker()
    first = broker.delivery(p, "t0", 0)
    await event(first, kind, "admit")
    assert (await event(broker.delivery(p, "t1", 1), kind, "admit")).verdict is Verdict.PARKED
    await event(first, kind, "succeeded", 0)
    newcomer = broker.delivery(p, "t9", 9)
    assert (await event(newcomer, kind, "admit")).verdict is Verdict.PARKED
    copy = broker.redeliver(p)
    assert copy.task_id == "t1"
    assert (await event(copy, kind, "admit")).verdict is Verdict.RUN


async def test_parked_hold_has_no_expiry_and_gets_its_ttl_back(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, once_key="o-{x}", once_ttl=30, pool_key="p", pool_max_size=1)
    broker = Broker()
    p.claim("t0", (0,), {})
    first = broker.delivery(p, "t0", 0)
    await event(first, kind, "admit")
    p.claim("t1", (1,), {})
    assert (await event(broker.delivery(p, "t1", 1), kind, "admit")).verdict is Verdict.PARKED
    key = p.once_key((1,), {})
    assert key is not None
    backend = p.cachify.sync_backend
    assert backend.lock_holder(key) == "t1"
    assert p.claim("t-dup", (1,), {}).duplicate  # newcomers are still deduplicated against it
    raw = getattr(backend, "client", None)
    if raw is not None:  # on Redis: no expiry while parked
        assert raw.pttl("{" + key + "}") == -1
    await event(first, kind, "succeeded", 0)
    copy = broker.redeliver(p)
    assert (await event(copy, kind, "admit")).verdict is Verdict.RUN
    if raw is not None:
        assert 0 < raw.pttl("{" + key + "}") <= 30_000
    await event(copy, kind, "succeeded", 1)
    assert backend.lock_holder(key) is None


async def test_running_mode_hold_is_given_back_while_parked(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, once_key="o-{x}", once_mode="running", pool_key="p", pool_max_size=1)
    broker = Broker()
    first = broker.delivery(p, "t0", 0)
    await event(first, kind, "admit")
    assert (await event(broker.delivery(p, "t1", 1), kind, "admit")).verdict is Verdict.PARKED
    key = p.once_key((1,), {})
    assert key is not None
    assert p.cachify.sync_backend.lock_holder(key) is None


async def test_cache_hit_of_a_handed_copy_passes_its_slot_on(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, pool_key="p", pool_max_size=1, cache_key="c-{x}")
    broker = Broker()
    first = broker.delivery(p, "t0", 0)
    await event(first, kind, "admit")
    for i in (1, 2):
        assert (await event(broker.delivery(p, f"t{i}", 7), kind, "admit")).verdict is Verdict.PARKED
    other = broker.delivery(p, "t-other", 7)
    await event(first, kind, "succeeded", 0)
    # Meanwhile the result of x=7 got cached (another run of the same key finished).
    assert (await event(other, kind, "admit")).verdict is Verdict.PARKED
    c = p.cachify
    ns = p.options.cache_key.namespace(c.prefix)  # type: ignore[union-attr]
    c.sync_backend.cache_set(ns, p.options.cache_key.format((7,), {}), c.codec.pack(49, "t"), None, "0")  # type: ignore[union-attr]
    copy = broker.redeliver(p)
    hit = await event(copy, kind, "admit")
    assert (hit.verdict, hit.value) == (Verdict.CACHED, 49)
    # Its reserved slot went straight to the next in line.
    assert [m["id"] for _, m in broker.sent] == ["t2"]


async def test_second_copy_of_a_claimed_hand_over_does_not_run(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, once_key="o-{x}", pool_key="p", pool_max_size=1)
    broker = Broker()
    p.claim("t0", (0,), {})
    first = broker.delivery(p, "t0", 0)
    await event(first, kind, "admit")
    p.claim("t1", (1,), {})
    await event(broker.delivery(p, "t1", 1), kind, "admit")
    await event(first, kind, "succeeded", 0)
    entry_id, message = broker.sent[0]
    copy = broker.redeliver(p)
    assert (await event(copy, kind, "admit")).verdict is Verdict.RUN
    twin = broker.copy(p, entry_id, message)  # a duplicate publish
    decision = await event(twin, kind, "admit")
    assert decision.verdict is Verdict.SKIP
    key = p.once_key((1,), {})
    assert key is not None
    assert p.cachify.sync_backend.lock_holder(key) == "t1"  # the running claimer keeps its hold
    await event(copy, kind, "succeeded", 1)
    assert p.cachify.sync_backend.lock_holder(key) is None


async def test_waiting_room_at_its_cap_backs_off_through_the_broker(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, pool_key="p", pool_max_size=1, pool_max_waiting=1)
    broker = Broker()
    await event(broker.delivery(p, "t0", 0), kind, "admit")
    assert (await event(broker.delivery(p, "t1", 1), kind, "admit")).verdict is Verdict.PARKED
    third = broker.delivery(p, "t2", 2)
    decision = await event(third, kind, "admit")
    assert (decision.verdict, third.state) == (Verdict.REQUEUE, State.REQUEUING)
    assert third.copy_fields() == {REQUEUES_FIELD: 1}  # the store answered: no origin to carry


async def test_no_payload_means_backoff(cachify: Cachify, kind: str) -> None:
    p = policy(cachify, pool_key="p", pool_max_size=1)
    await event(live(Delivery(p, "t0", (0,), {})), kind, "admit")
    decision = await event(live(Delivery(p, "t1", (1,), {})), kind, "admit")
    assert decision.verdict is Verdict.REQUEUE


async def test_a_failing_publisher_is_left_to_the_sweep(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, pool_key="p", pool_max_size=1)
    broker = Broker()

    def broken(handed: Sequence[Handover]) -> None:
        raise ConnectionError("broker down")

    first = live(Delivery(p, "t0", (0,), {}, payload=lambda: b"{}", publish=broken))
    await event(first, kind, "admit")
    await event(broker.delivery(p, "t1", 1), kind, "admit")
    await event(first, kind, "succeeded", 0)  # the publish failed: logged, not raised
    stats = p.cachify.sync_backend.room_stats(p.cachify.prefix + "p-pool")
    assert (stats.parked, stats.handed) == (0, 1)


def test_publish_all_frames_by_framework() -> None:
    sent: list[tuple[str, bytes]] = []
    mine = Handover("e1", handover.payload("celery", b"body-1"))
    theirs = Handover("e2", handover.payload("dramatiq", b"body-2"))

    def fails_once(entry_id: str, body: bytes) -> None:
        if entry_id == "e3":
            raise ConnectionError("down")
        sent.append((entry_id, body))

    failing = Handover("e3", handover.payload("celery", b"body-3"))
    assert handover.publish_all("celery", [mine, theirs, failing], fails_once) == 1
    assert sent == [("e1", b"body-1")]


async def test_a_late_duplicate_of_a_finished_hand_over_leaves_no_hold(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, once_key="o-{x}", pool_key="p", pool_max_size=1)
    broker = Broker()
    p.claim("t0", (0,), {})
    first = broker.delivery(p, "t0", 0)
    await event(first, kind, "admit")
    p.claim("t1", (1,), {})
    await event(broker.delivery(p, "t1", 1), kind, "admit")
    await event(first, kind, "succeeded", 0)
    entry_id, message = broker.sent[0]
    copy = broker.redeliver(p)
    await event(copy, kind, "admit")
    await event(copy, kind, "succeeded", 1)  # the claimer finished, its hold released
    late = broker.copy(p, entry_id, message)  # e.g. published again by a sweep
    assert (await event(late, kind, "admit")).verdict is Verdict.SKIP
    assert not p.claim("t2", (1,), {}).duplicate  # the late copy took nothing with it


async def test_running_mode_cache_hit_gives_the_hold_back(cachify: Cachify, kind: str) -> None:
    p = policy(
        cachify, once_key="o-{x}", once_mode="running", pool_key="p", pool_max_size=1, cache_key="c-{x}"
    )
    broker = Broker()
    first = broker.delivery(p, "t0", 5)
    await event(first, kind, "admit")
    await event(first, kind, "succeeded", 25)
    hit = await event(broker.delivery(p, "t1", 5), kind, "admit")
    assert hit.verdict is Verdict.CACHED
    key = p.once_key((5,), {})
    assert key is not None
    assert p.cachify.sync_backend.lock_holder(key) is None
    assert slots(p) == 0


@pytest.mark.parametrize("on_full", ["drop", "raise"])
async def test_a_handed_copy_that_may_not_park_does_not(cachify: Cachify, kind: str, on_full: str) -> None:
    """A pool whose tasks may not park still goes through its room: a newcomer that finds it
    full is refused (drop/raise), never parked with nothing to publish."""
    supports(cachify)
    p = policy(cachify, pool_key="p", pool_max_size=1, pool_on_full=on_full)
    broker = Broker()
    first = broker.delivery(p, "t0", 0)
    await event(first, kind, "admit")
    second = broker.delivery(p, "t1", 1, reservation="not-a-parked-entry")
    if on_full == "raise":
        with pytest.raises(CachifyPoolFullError):
            await event(second, kind, "admit")
    else:
        assert (await event(second, kind, "admit")).verdict is Verdict.SKIP
    stats = p.cachify.sync_backend.room_stats(p.cachify.prefix + "p-pool")
    assert (stats.parked, stats.handed) == (0, 0)


async def test_a_plain_pool_release_hands_over_too(cachify: Cachify, kind: str) -> None:
    """A run admitted without a payload (it could not park) still releases through the room."""
    supports(cachify)
    p = policy(cachify, pool_key="p", pool_max_size=1)
    broker = Broker()
    plain = live(Delivery(p, "t0", (0,), {}, publish=broker.publish))
    await event(plain, kind, "admit")
    assert (await event(broker.delivery(p, "t1", 1), kind, "admit")).verdict is Verdict.PARKED
    await event(plain, kind, "succeeded", 0)
    assert [m["id"] for _, m in broker.sent] == ["t1"]


@pytest.mark.parametrize("named_by", ["slot_token", "park_id"])
async def test_a_redelivered_park_is_recognised(cachify: Cachify, kind: str, named_by: str) -> None:
    """A worker that dies between parking a delivery and acknowledging it: the broker delivers
    the same message again. With a slot token derived from the delivery (Celery's), or a park id
    (Dramatiq's and Taskiq's, whose slot tokens stay fresh per delivery), that copy parks under
    the same entry id, and is acknowledged without a second entry — before and after the
    task's hand-over ran."""
    supports(cachify)
    p = policy(cachify, pool_key="p", pool_max_size=1)
    broker = Broker()

    def delivery(task_id: str, x: int, reservation: str | None = None) -> Delivery:
        body = json.dumps({"id": task_id, "args": [x]}).encode()
        name = f"test:{task_id}:0.0"
        return live(
            Delivery(
                p, task_id, (x,), {}, 0, name if named_by == "slot_token" else None,
                reservation=reservation, payload=lambda: body, publish=broker.publish,
                park_id=name if named_by == "park_id" else None,
            )
        )  # fmt: skip

    first = delivery("t0", 0)
    await event(first, kind, "admit")
    assert (await event(delivery("t1", 1), kind, "admit")).verdict is Verdict.PARKED
    assert (await event(delivery("t1", 1), kind, "admit")).verdict is Verdict.PARKED  # redelivered
    assert p.cachify.sync_backend.room_stats(p.cachify.prefix + "p-pool").parked == 1
    await event(first, kind, "succeeded", 0)
    copy = broker.redeliver(p)
    assert (await event(copy, kind, "admit")).verdict is Verdict.RUN
    await event(copy, kind, "succeeded", 1)
    late = delivery("t1", 1)  # the original message once more, after its task ran
    assert (await event(late, kind, "admit")).verdict is Verdict.SKIP  # acknowledged, not run
    assert slots(p) == 0


def lost_reply_instance(redis_url: str) -> tuple[ReplyLosingProxy, Cachify]:
    url = urlsplit(redis_url)
    proxy = ReplyLosingProxy(url.hostname or "127.0.0.1", url.port or 6379)
    db = int((url.path or "/0").lstrip("/") or 0)
    return proxy, init_cachify(url=proxy.url(db), prefix=f"T{uuid.uuid4().hex[:8]}-", is_global=False)


@pytest.mark.parametrize("named_by", ["slot_token", "park_id"])
async def test_a_copy_deferred_after_a_lost_reply_finds_its_park(
    flushed_redis_url: str, kind: str, named_by: str
) -> None:
    """The store parks a delivery and its reply is lost (the store died, the network dropped):
    the delivery can only defer (a copy through the broker). The copy asks under the deferred
    delivery's name (``cachify_origin``), so it finds the entry that call parked and is
    acknowledged: the task runs once, from its hand-over, not a second time from the copy."""
    proxy, c = lost_reply_instance(flushed_redis_url)
    with proxy:
        p = policy(c, pool_key="p", pool_max_size=1)
        broker = Broker()

        def delivery(task_id: str, x: int, requeues: int = 0, origin: object = None) -> Delivery:
            body = json.dumps({"id": task_id, "args": [x]}).encode()
            name = delivery_name("test", task_id, 0, requeues, origin)
            return live(
                Delivery(
                    p, task_id, (x,), {}, requeues, name if named_by == "slot_token" else None,
                    payload=lambda: body, publish=broker.publish,
                    park_id=name if named_by == "park_id" else None,
                )
            )  # fmt: skip

        first = delivery("t0", 0)
        assert (await event(first, kind, "admit")).verdict is Verdict.RUN
        deferred = delivery("t1", 1)
        proxy.lose_next_reply()
        decision = await event(deferred, kind, "admit")
        assert proxy.lost == 1
        assert decision.verdict is Verdict.REQUEUE
        assert "store unreachable" in decision.reason
        assert c.sync_backend.room_stats(c.prefix + "p-pool").parked == 1  # the lost call parked it
        fields = deferred.copy_fields()
        assert fields[REQUEUES_FIELD] == 1
        copy = delivery("t1", 1, requeues=1, origin=fields[ORIGIN_FIELD])
        assert (await event(copy, kind, "admit")).verdict is Verdict.PARKED  # recognised: acknowledged
        assert c.sync_backend.room_stats(c.prefix + "p-pool").parked == 1  # not parked twice
        await event(first, kind, "succeeded", 0)
        assert [m["id"] for _, m in broker.sent] == ["t1"]
        handed = broker.redeliver(p)
        assert (await event(handed, kind, "admit")).verdict is Verdict.RUN
        await event(handed, kind, "succeeded", 1)
        assert broker.sent == []
        assert slots(p) == 0
        assert c.sync_backend.room_stats(c.prefix + "p-pool").parked == 0


async def test_a_copy_deferred_after_a_lost_reply_keeps_the_slot_it_took(
    flushed_redis_url: str, kind: str
) -> None:
    """The store leased a slot and its reply was lost: the copy, leasing under the deferred
    delivery's token (Celery's slot tokens are delivery names), gets that same slot back instead
    of a second one, and the pool is empty once it ran. A reservation claimed by a lost call is
    claimed again the same way."""
    proxy, c = lost_reply_instance(flushed_redis_url)
    with proxy:
        p = policy(c, pool_key="p", pool_max_size=1)
        broker = Broker()

        def delivery(
            task_id: str, requeues: int = 0, origin: object = None, reservation: str | None = None
        ) -> Delivery:
            body = json.dumps({"id": task_id, "args": [1]}).encode()
            name = delivery_name("test", task_id, 0, requeues, origin)
            return live(
                Delivery(
                    p, task_id, (1,), {}, requeues, name, reservation=reservation,
                    payload=lambda: body, publish=broker.publish,
                )
            )  # fmt: skip

        deferred = delivery("t1")
        proxy.lose_next_reply()
        assert (await event(deferred, kind, "admit")).verdict is Verdict.REQUEUE
        assert slots(p) == 1  # leased by the call whose reply was lost
        copy = delivery("t1", 1, deferred.copy_fields()[ORIGIN_FIELD])
        assert (await event(copy, kind, "admit")).verdict is Verdict.RUN  # its own slot, not a second
        assert slots(p) == 1
        assert (await event(delivery("t2"), kind, "admit")).verdict is Verdict.PARKED
        await event(copy, kind, "succeeded", 1)  # hands the slot to t2
        ((entry, _),) = broker.sent
        broker.sent.clear()
        claiming = delivery("t2", 1, reservation=entry)
        proxy.lose_next_reply()
        assert (await event(claiming, kind, "admit")).verdict is Verdict.REQUEUE  # claimed, unheard
        again = delivery("t2", 2, claiming.copy_fields()[ORIGIN_FIELD], reservation=entry)
        assert (await event(again, kind, "admit")).verdict is Verdict.RUN  # its claim, at once
        await event(again, kind, "succeeded", 1)
        assert slots(p) == 0
        assert broker.sent == []


def test_an_origin_is_for_the_one_copy_it_was_written_for() -> None:
    """``cachify_origin`` is inherited by whatever copies the message's headers later (a retry,
    a requeue, a parked task's hand-over): only the copy it was written for takes it."""
    origin = "1/celery:t1:0.0"
    assert read_origin(origin, delivery_name("celery", "t1", 0, 1)) == "celery:t1:0.0"
    assert read_origin("3/celery:t1:0.0", delivery_name("celery", "t1", 0, 3)) == "celery:t1:0.0"  # a chain
    assert read_origin(origin, delivery_name("celery", "t1", 0, 2)) is None  # a later requeue
    assert read_origin(origin, delivery_name("celery", "t1", 1, 1)) is None  # a retry
    assert read_origin(origin, delivery_name("celery", "t2", 0, 1)) is None  # another task
    assert read_origin("1/a:b:c:d.0", delivery_name("a", "b:c", "d", 1)) is None  # unreadable retries
    for junk in (None, 1, "", "1", "/x", "x/celery:t1:0.0", b"1/celery:t1:0.0"):
        assert read_origin(junk, delivery_name("celery", "t1", 0, 1)) is None


def _nobody(handed: Sequence[Handover]) -> None:
    """A delivery's publisher where nothing is expected to be handed over."""
    assert not handed


def durable_server() -> PrivateServer:
    """A private server that keeps its data across a SIGKILL and restart (append-only, fsync
    always): an outage the store comes back from with its slots and parked entries."""
    server = PrivateServer(require_server_binary(), extra=("--appendonly", "yes", "--appendfsync", "always"))
    server.start()
    return server


async def test_a_slot_a_finish_could_not_give_back_is_handed_over_by_the_next_admission(kind: str) -> None:
    # The store dies while t0 runs on a pool of 1 with t1 parked, and comes back with its data:
    # t0's finish fails (its release is owed, its lease no longer renewed but good for 60 s),
    # and the next admission in this process gives the slot back first, handing it to t1 —
    # not pool_slot_ttl later.
    server = durable_server()
    c = init_cachify(url=server.url, is_global=False)
    try:
        p = policy(c, pool_key="p", pool_max_size=1, pool_slot_ttl=60)
        broker = Broker()
        first = broker.delivery(p, "t0", 0)
        assert (await event(first, kind, "admit")).verdict is Verdict.RUN
        assert (await event(broker.delivery(p, "t1", 1), kind, "admit")).verdict is Verdict.PARKED
        server.kill()
        await event(first, kind, "succeeded", 0)  # keeps its outcome; the slot's release is owed
        assert first.state is State.ENDED
        assert owed.count(c) == 1
        server.start()  # same port and data directory
        assert slots(p) == 1  # still t0's: without the owed release, for up to 60 s
        newcomer = broker.delivery(p, "t2", 2)
        assert (await event(newcomer, kind, "admit")).verdict is Verdict.PARKED  # behind t1
        assert owed.count(c) == 0
        assert [m["id"] for _, m in broker.sent] == ["t1"]  # handed over, published by the newcomer
        copy = broker.redeliver(p)
        assert (await event(copy, kind, "admit")).verdict is Verdict.RUN
        await event(copy, kind, "succeeded", 1)
        assert [m["id"] for _, m in broker.sent] == ["t2"]
    finally:
        server.stop()


def test_a_slot_a_finish_could_not_give_back_is_handed_over_by_the_next_sweep_tick() -> None:
    # The same outage with no delivery coming afterwards: the worker's sweeper makes the owed
    # release at its first tick after the store is back, and publishes the hand-over.
    server = durable_server()
    c = init_cachify(url=server.url, is_global=False)
    published: list[tuple[str, dict[str, Any]]] = []
    try:
        p = policy(c, pool_key="p", pool_max_size=1, pool_slot_ttl=60)
        first = live(
            Delivery(p, "t0", (0,), {}, payload=lambda: handover.payload("test", b"{}"), publish=_nobody)
        )
        assert first.admit().verdict is Verdict.RUN
        body = json.dumps({"id": "t1", "args": [1]}).encode()
        parked = live(
            Delivery(p, "t1", (1,), {}, payload=lambda: handover.payload("test", body), publish=_nobody)
        )
        assert parked.admit().verdict is Verdict.PARKED
        server.kill()
        first.succeeded(0)
        assert owed.count(c) == 1
        server.start()
        sweeper = handover.start_worker_sweeper(
            c, "test", lambda entry_id, raw: published.append((entry_id, json.loads(raw))), interval_s=0.1
        )
        assert sweeper is not None
        deadline = time.monotonic() + 10
        while not published and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [m["id"] for _, m in published] == ["t1"]  # within a tick or two, not 60 s
        assert owed.count(c) == 0
        assert slots(p) == 1  # the slot, reserved for t1
    finally:
        handover.stop_worker_sweepers()
        server.stop()


async def test_a_slot_named_after_its_delivery_is_not_owed(kind: str) -> None:
    # A token the integration names after the delivery (Celery's) is presented again by a
    # redelivered copy, which takes the slot over: a late release would free the copy's slot,
    # so such a slot is left to pool_slot_ttl.
    server = durable_server()
    c = init_cachify(url=server.url, is_global=False)
    try:
        p = policy(c, pool_key="p", pool_max_size=1, pool_slot_ttl=60)
        first = live(Delivery(p, "t0", (0,), {}, slot_token="t0/0/0", payload=lambda: b"{}", publish=_nobody))
        assert (await event(first, kind, "admit")).verdict is Verdict.RUN
        server.kill()
        await event(first, kind, "succeeded", 0)
        assert owed.count(c) == 0
        server.start()
        copy = live(Delivery(p, "t0", (0,), {}, slot_token="t0/0/0", payload=lambda: b"{}", publish=_nobody))
        assert (await event(copy, kind, "admit")).verdict is Verdict.RUN  # the same name: its slot
        assert slots(p) == 1
        await event(copy, kind, "succeeded", 0)
        assert slots(p) == 0
    finally:
        server.stop()
