"""The ``rate_*`` task options in the delivery lifecycle: a run the limits do not admit now is
parked, uncounted, as a timed entry due when they would admit it (spaced after the entries
before it), published again by the sweep at that time (never earlier), and counted when it
arrives — so runs that arrive late start no faster than the limits allow — on both backends,
blocking and asyncio."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cachify_core import Cachify, CachifyRateLimitedError
from cachify_core.tasks import (
    CachifyTaskOptionError,
    Delivery,
    State,
    TaskPolicy,
    Verdict,
    parse_task_options,
)

from .delivery_support import Broker, event, live

TASK = "tasks.geocode"


def geocode(tenant: str, x: int = 0) -> int:
    return x


def policy(cachify: Cachify, **raw: Any) -> TaskPolicy:
    return TaskPolicy(parse_task_options(TASK, geocode, raw), cachify)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def supports(cachify: Cachify) -> None:
    if not cachify.sync_backend.supports_waiting_room:
        pytest.skip("store without waiting rooms")


async def burst_spent(cachify: Cachify, kind: str) -> tuple[TaskPolicy, Broker]:
    """A task limited to 4/s (burst 4, then one per 250 ms) whose burst four runs just spent."""
    supports(cachify)
    p = policy(cachify, rate_key="geo-{tenant}", rate="4/s")
    broker = Broker()
    for i in range(4):
        d = broker.delivery(p, f"t{i}", "acme")
        assert (await event(d, kind, "admit")).verdict is Verdict.RUN
        await event(d, kind, "succeeded", i)
    return p, broker


async def test_a_limited_run_parks_until_its_time_and_is_counted_when_it_runs(
    cachify: Cachify, kind: str
) -> None:
    p, broker = await burst_spent(cachify, kind)
    late = [broker.delivery(p, f"t{i}", "acme") for i in (4, 5)]
    for d in late:
        decision = await event(d, kind, "admit")
        assert (decision.verdict, d.state) == (Verdict.PARKED, State.ENDED)
    broker.sweep(cachify)
    assert broker.sent == []  # not due yet: never published early
    took = broker.wait_for(cachify, 1, 2.0)
    assert 0.15 < took < 0.6  # its own time (~250 ms after the burst), not earlier
    copy = broker.redeliver(p)
    assert copy.task_id == "t4"
    assert (await event(copy, kind, "admit")).verdict is Verdict.RUN  # counted now, at its time
    await event(copy, kind, "succeeded", 4)
    broker.wait_for(cachify, 1, 2.0)
    second = broker.redeliver(p)
    assert second.task_id == "t5"
    assert (await event(second, kind, "admit")).verdict is Verdict.RUN
    await event(second, kind, "succeeded", 5)
    # Another tenant has a limit of its own.
    other = broker.delivery(p, "o1", "globex")
    assert (await event(other, kind, "admit")).verdict is Verdict.RUN
    await asyncio.sleep(0.3)
    broker.sweep(cachify)
    assert broker.sent == []  # claimed entries are not published again


async def test_runs_that_arrive_late_together_start_no_faster_than_the_limit(
    cachify: Cachify, kind: str
) -> None:
    """A backlog in the broker holds every due hand-over back, then delivers them at once: each
    is counted when it arrives, so only what the limit admits then runs (its burst) and the
    rest wait again, each at a time of its own."""
    p, broker = await burst_spent(cachify, kind)
    for i in range(4, 10):
        assert (await event(broker.delivery(p, f"t{i}", "acme"), kind, "admit")).verdict is Verdict.PARKED
    broker.wait_for(cachify, 6, 4.0)  # due 250 ms apart: all six published by ~1.5 s
    await asyncio.sleep(0.3)  # the limit is idle again: its burst of 4 is back, no more
    verdicts = []
    for _ in range(6):
        copy = broker.redeliver(p)
        verdicts.append((await event(copy, kind, "admit")).verdict)
        if verdicts[-1] is Verdict.RUN:
            await event(copy, kind, "succeeded", 0)
    assert verdicts.count(Verdict.RUN) == 4
    assert verdicts[4:] == [Verdict.PARKED, Verdict.PARKED]
    took = broker.wait_for(cachify, 2, 3.0)  # spaced again: the first ~250 ms on, not at once
    assert took > 0.1
    for _ in range(2):
        copy = broker.redeliver(p)
        decision = await event(copy, kind, "admit")
        if decision.verdict is Verdict.PARKED:  # the second may be early for its own time
            broker.wait_for(cachify, 1, 2.0)
            copy = broker.redeliver(p)
            decision = await event(copy, kind, "admit")
        assert decision.verdict is Verdict.RUN
        await event(copy, kind, "succeeded", 0)


async def test_a_duplicate_copy_of_a_claimed_timed_entry_does_not_run(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, rate_key="geo-{tenant}", rate="1/s")
    broker = Broker()
    first = broker.delivery(p, "t0", "acme")
    await event(first, kind, "admit")
    await event(broker.delivery(p, "t1", "acme"), kind, "admit")
    broker.wait_for(cachify, 1, 2.5)
    entry_id, message = broker.sent[0]
    copy = broker.redeliver(p)
    assert (await event(copy, kind, "admit")).verdict is Verdict.RUN
    twin = broker.copy(p, entry_id, message)
    assert (await event(twin, kind, "admit")).verdict is Verdict.SKIP
    await event(copy, kind, "succeeded", 1)


@pytest.mark.parametrize("mode", ["drop", "raise", "callable"])
async def test_rate_on_limited(cachify: Cachify, kind: str, mode: str) -> None:
    on_limited: Any = (lambda tenant, x=0: f"later-{tenant}") if mode == "callable" else mode
    p = policy(
        cachify, once_key="g-{tenant}-{x}", rate_key="geo-{tenant}", rate="1/m", rate_on_limited=on_limited
    )
    broker = Broker()
    p.claim("t0", ("acme",), {})
    await event(broker.delivery(p, "t0", "acme"), kind, "admit")
    p.claim("t1", ("acme", 1), {})
    d = live(Delivery(p, "t1", ("acme", 1), {}, payload=lambda: b"{}", publish=broker.publish))
    if mode == "raise":
        with pytest.raises(CachifyRateLimitedError) as caught:
            await event(d, kind, "admit")
        assert 55 < caught.value.retry_after_s <= 60
    else:
        decision = await event(d, kind, "admit")
        expected = Verdict.SKIP if mode == "drop" else Verdict.RETURN
        assert decision.verdict is expected
        if mode == "callable":
            assert decision.value == "later-acme"
    # the run will not happen: its hold went with it
    assert not p.claim("t2", ("acme", 1), {}).duplicate


async def test_without_a_payload_it_backs_off_for_the_reported_time(cachify: Cachify, kind: str) -> None:
    p = policy(cachify, rate_key="geo-{tenant}", rate="1/s")
    await event(live(Delivery(p, "t0", ("acme",), {})), kind, "admit")
    decision = await event(live(Delivery(p, "t1", ("acme",), {})), kind, "admit")
    assert decision.verdict is Verdict.REQUEUE
    assert 0.5 < decision.delay_s <= 1.0


async def test_rate_then_pool_counts_once(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, rate_key="geo-{tenant}", rate="2/s", pool_key="p", pool_max_size=1)
    broker = Broker()
    first = broker.delivery(p, "t0", "acme")
    assert (await event(first, kind, "admit")).verdict is Verdict.RUN
    second = broker.delivery(p, "t1", "acme")
    assert (await event(second, kind, "admit")).verdict is Verdict.PARKED  # rate ok, pool full
    await event(first, kind, "succeeded", 0)
    copy = broker.redeliver(p)  # the pool's hand-over: its rate was counted already
    assert (await event(copy, kind, "admit")).verdict is Verdict.RUN
    await event(copy, kind, "succeeded", 1)
    # The limiter saw exactly two runs: a third is refused now.
    third = broker.delivery(p, "t2", "acme")
    assert (await event(third, kind, "admit")).verdict is Verdict.PARKED


async def test_global_and_per_tenant_bounds_both_apply(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, rate_keys=[("geo-{tenant}", "2/m"), ("geo-all", "3/m")])
    broker = Broker()
    verdicts = []
    for n, tenant in enumerate(["a", "a", "a", "b", "c"]):
        verdicts.append((await event(broker.delivery(p, f"t{n}", tenant), kind, "admit")).verdict)
    # a: 2 per tenant; the global 3 then refuses c (b was the third)
    assert verdicts == [Verdict.RUN, Verdict.RUN, Verdict.PARKED, Verdict.RUN, Verdict.PARKED]


async def test_cache_hit_of_a_timed_copy_leaves_the_room(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, rate_key="geo-{tenant}", rate="1/s", cache_key="c-{tenant}")
    broker = Broker()
    first = broker.delivery(p, "t0", "acme")
    await event(first, kind, "admit")
    await event(broker.delivery(p, "t1", "acme"), kind, "admit")
    await event(first, kind, "succeeded", 42)  # cached now
    broker.wait_for(cachify, 1, 2.5)
    copy = broker.redeliver(p)
    hit = await event(copy, kind, "admit")
    assert (hit.verdict, hit.value) == (Verdict.CACHED, 42)
    stats = cachify.sync_backend.room_stats(cachify.prefix + "geo-acme-rate-room")
    assert (stats.parked, stats.handed, stats.timed) == (0, 0, 0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"rate_key": "geo-{tenant}", "rate": "10/x"}, "rate '10/x' is not"),
        ({"rate_key": "geo-{tenant}", "rate": "0/s"}, "count must be >= 1"),
        ({"rate_key": "geo-{tenant}", "rate": "1/s", "rate_cost": -1}, "rate_cost must be an int >= 1"),
        ({"rate_key": "geo-{tenant}", "rate": "1/s", "rate_cost": 5}, "exceeds the burst"),
        ({"rate": "1/s"}, "given without rate_key"),
        ({"rate_key": "geo-{tenant}"}, "rate_key needs rate"),
        ({"rate_key": "geo-{nope}", "rate": "1/s"}, "rate_key"),
        ({"rate_keys": [("a", "1/s"), "b"]}, "rate_keys[1] must be a (key_template, rate) pair"),
        ({"rate_key": "g", "rate": "1/s", "rate_on_limited": "later"}, "rate_on_limited must be"),
        ({"rate_keyz": "g"}, "unknown option"),
    ],
)
def test_bad_rate_options_fail_at_declaration(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(CachifyTaskOptionError) as caught:
        parse_task_options(TASK, geocode, raw)
    assert TASK in str(caught.value)
    assert message in str(caught.value)


def test_celery_rate_limit_is_not_ours() -> None:
    assert parse_task_options(TASK, geocode, {"rate_limit": "10/s"}).rate_bounds == ()


async def test_a_timed_copy_requeued_by_a_full_pool_still_runs(cachify: Cachify, kind: str) -> None:
    """Its rate claim is left for the requeued copy (which carries the same reservation) to
    take over, not finished: otherwise that copy would be taken for a duplicate."""
    supports(cachify)
    p = policy(
        cachify, rate_key="geo-{tenant}", rate="1/s", pool_key="pp", pool_max_size=1, pool_max_waiting=0
    )
    broker = Broker()
    first = broker.delivery(p, "t0", "acme")
    assert (await event(first, kind, "admit")).verdict is Verdict.RUN
    assert (await event(broker.delivery(p, "t1", "acme"), kind, "admit")).verdict is Verdict.PARKED
    broker.wait_for(cachify, 1, 2.5)
    entry_id, message = broker.sent.pop(0)
    copy = broker.copy(p, entry_id, message)
    assert (await event(copy, kind, "admit")).verdict is Verdict.REQUEUE  # the pool is still full
    copy.requeue_published()
    await event(first, kind, "succeeded", 0)
    again = broker.copy(p, entry_id, message)  # the requeued copy, same reservation
    assert (await event(again, kind, "admit")).verdict is Verdict.RUN
    await event(again, kind, "succeeded", 1)


async def test_a_timed_copy_parked_by_its_pool_ends_its_rate_claim(cachify: Cachify, kind: str) -> None:
    supports(cachify)
    p = policy(cachify, rate_key="geo-{tenant}", rate="1/s", pool_key="pp", pool_max_size=1)
    broker = Broker()
    first = broker.delivery(p, "t0", "acme")
    await event(first, kind, "admit")
    await event(broker.delivery(p, "t1", "acme"), kind, "admit")
    broker.wait_for(cachify, 1, 2.5)
    copy = broker.redeliver(p)
    assert (await event(copy, kind, "admit")).verdict is Verdict.PARKED  # now in the pool's room
    rate_room = cachify.prefix + "geo-acme-rate-room"
    assert cachify.sync_backend.pool_size(rate_room) == 0  # no claim lease left behind
    await event(first, kind, "succeeded", 0)
    pool_copy = broker.redeliver(p)
    assert (await event(pool_copy, kind, "admit")).verdict is Verdict.RUN
    await event(pool_copy, kind, "succeeded", 1)
