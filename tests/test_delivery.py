"""The delivery lifecycle (``cachify_core.tasks.delivery``) driven by hand, as integrations
drive it: every row of the state table in its docstring, on both backends of the ``cachify``
fixture, with the blocking events and their asyncio twins."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytest

from cachify_core import Cachify, CachifyBackendError, CachifyPoolFullError, init_cachify
from cachify_core.tasks import (
    Delivery,
    State,
    TaskPolicy,
    Verdict,
    is_retry_of,
    logs,
    owed,
    parse_task_options,
)

from .servers import PrivateServer, free_port, require_server_binary

TASK = "tasks.job"


def job(x: int) -> int:
    return x


def policy(cachify: Cachify, **raw: Any) -> TaskPolicy:
    return TaskPolicy(parse_task_options(TASK, job, raw), cachify)


@pytest.fixture(autouse=True)
def no_outage_going_on() -> None:
    """The outage log is per process: each test starts outside an outage."""
    logs.store_reachable()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def event(delivery: Delivery, kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the blocking event ``name`` or its ``a``-prefixed twin."""
    if kind == "sync":
        return getattr(delivery, name)(*args, **kwargs)
    result = getattr(delivery, "a" + name)(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


def holder(p: TaskPolicy, x: int = 1) -> str | None:
    key = p.once_key((x,), {})
    assert key is not None
    return p.cachify.sync_backend.lock_holder(key)


def slots(p: TaskPolicy, key: str = "p") -> int:
    return p.cachify.sync_backend.pool_size(p.cachify.prefix + key + "-pool")


async def test_success_caches_and_releases(cachify: Cachify, kind: str) -> None:
    p = policy(cachify, once_key="o-{x}", pool_key="p", pool_max_size=1, cache_key="c-{x}")
    p.claim("t1", (1,), {})
    d = Delivery(p, "t1", (1,), {})
    assert (await event(d, kind, "admit")).verdict is Verdict.RUN
    assert d.state is State.RUNNING
    assert slots(p) == 1
    await event(d, kind, "succeeded", 10)
    assert d.state is State.ENDED
    assert holder(p) is None
    assert slots(p) == 0
    again = Delivery(p, "t2", (1,), {})
    hit = await event(again, kind, "admit")
    assert (hit.verdict, hit.value, again.state) == (Verdict.CACHED, 10, State.ENDED)


@pytest.mark.parametrize(("retry", "kept"), [(True, True), (False, False)])
async def test_raised_with_a_known_outcome(cachify: Cachify, kind: str, retry: bool, kept: bool) -> None:
    p = policy(cachify, once_key="o-{x}", pool_key="p", pool_max_size=1)
    p.claim("t1", (1,), {})
    d = Delivery(p, "t1", (1,), {})
    await event(d, kind, "admit")
    assert await event(d, kind, "raised", ValueError("boom"), retry=retry) is None
    assert d.state is State.ENDED
    assert slots(p) == 0
    assert (holder(p) == "t1") is kept


async def test_raised_then_the_framework_decides(cachify: Cachify, kind: str) -> None:
    p = policy(cachify, once_key="o-{x}")
    for then, kept in (("retrying", True), ("ended", False)):
        p.claim("t1", (1,), {}, resend=True)
        d = Delivery(p, "t1", (1,), {})
        await event(d, kind, "admit")
        await event(d, kind, "raised", ValueError("boom"))
        assert d.state is State.RAISED
        assert holder(p) == "t1"
        assert is_retry_of(d, "t1")
        assert not is_retry_of(d, "other")
        await event(d, kind, then)
        assert d.state is State.ENDED
        assert (holder(p) == "t1") is kept
        await event(d, kind, "ended")  # idempotent once ended
        assert (holder(p) == "t1") is kept


async def test_an_abandoned_delivery_gives_its_claim_back(cachify: Cachify, kind: str) -> None:
    p = policy(cachify, once_key="o-{x}")
    p.claim("t1", (1,), {})
    d = Delivery(p, "t1", (1,), {})
    await event(d, kind, "abandoned")
    assert d.state is State.ENDED
    assert holder(p) is None


async def test_a_full_pool_requeues_keeping_the_hold(cachify: Cachify, kind: str, caplog: Any) -> None:
    p = policy(cachify, once_key="o-{x}", pool_key="p", pool_max_size=1, pool_backoff=(0.01, 0.02))
    assert cachify.sync_backend.pool_acquire(cachify.prefix + "p-pool", "other", 1, 60_000, False)
    for outcome, kept in (("requeue_published", True), ("requeue_failed", False)):
        p.claim("t1", (1,), {}, resend=True)
        d = Delivery(p, "t1", (1,), {}, requeues=2)
        decision = await event(d, kind, "admit")
        assert decision.verdict is Verdict.REQUEUE
        assert 0 <= decision.delay_s <= 0.02
        assert d.state is State.REQUEUING
        assert holder(p) == "t1"
        with caplog.at_level(logging.INFO, logger="cachify.tasks"):
            if outcome == "requeue_published":
                d.requeue_published()  # no I/O: one method for both twins
            else:
                await event(d, kind, outcome)
        assert d.state is State.ENDED
        assert (holder(p) == "t1") is kept
    lines = [r.getMessage() for r in caplog.records]
    assert any(f"task {TASK}[t1] requeued (3)" in line and "pool" in line for line in lines), lines


async def test_a_failed_admission_ends_and_gives_the_claim_back(cachify: Cachify, kind: str) -> None:
    p = policy(cachify, once_key="o-{x}", pool_key="p", pool_max_size=1, pool_on_full="raise")
    assert cachify.sync_backend.pool_acquire(cachify.prefix + "p-pool", "other", 1, 60_000, False)
    p.claim("t1", (1,), {})
    d = Delivery(p, "t1", (1,), {})
    with pytest.raises(CachifyPoolFullError):
        await event(d, kind, "admit")
    assert d.state is State.ENDED
    assert holder(p) is None


async def test_a_drop_ends_with_the_hold_released_once(cachify: Cachify, kind: str) -> None:
    p = policy(cachify, once_key="o-{x}", pool_key="p", pool_max_size=1, pool_on_full="drop")
    assert cachify.sync_backend.pool_acquire(cachify.prefix + "p-pool", "other", 1, 60_000, False)
    p.claim("t1", (1,), {})
    d = Delivery(p, "t1", (1,), {})
    assert (await event(d, kind, "admit")).verdict is Verdict.SKIP
    assert d.state is State.ENDED
    assert holder(p) is None
    p.claim("t2", (1,), {})
    await event(d, kind, "ended")  # a framework's later ack must not touch t2's hold
    assert holder(p) == "t2"


async def test_a_full_pool_inside_the_body_requeues(cachify: Cachify, kind: str) -> None:
    p = policy(cachify, once_key="o-{x}", pool_backoff=(0.01, 0.02))
    p.claim("t1", (1,), {})
    d = Delivery(p, "t1", (1,), {})
    await event(d, kind, "admit")
    after = await event(d, kind, "raised", CachifyPoolFullError("inner pool full"))
    assert after is not None
    assert after.verdict is Verdict.REQUEUE
    assert d.state is State.REQUEUING
    assert holder(p) == "t1"


async def test_no_options_touch_no_store(kind: str) -> None:
    d = Delivery(
        TaskPolicy(parse_task_options(TASK, job, {}), lambda: pytest.fail("no store")), "t", (1,), {}
    )
    assert (await event(d, kind, "admit")).verdict is Verdict.RUN
    await event(d, kind, "succeeded", 1)
    assert d.state is State.ENDED


def down_policy(**raw: Any) -> TaskPolicy:
    """A policy on a Redis URL where nothing listens: every store call fails at once."""
    down = init_cachify(url=f"redis://127.0.0.1:{free_port()}/0", is_global=False)
    return TaskPolicy(parse_task_options(TASK, job, raw), down)


async def test_a_hold_a_finish_could_not_give_back_is_given_back_when_the_store_returns(
    kind: str, caplog: Any
) -> None:
    # A durable private server, SIGKILLed while the run is in its body and restarted with its
    # data: the finish fails, the hold survives the restart (held by t1 for once_ttl), and the
    # next admission on this instance gives it back before taking the key for t2.
    server = PrivateServer(require_server_binary(), extra=("--appendonly", "yes", "--appendfsync", "always"))
    server.start()
    c = init_cachify(url=server.url, is_global=False)
    try:
        p = TaskPolicy(parse_task_options(TASK, job, {"once_key": "o-{x}", "once_ttl": 3600}), c)
        first = Delivery(p, "t1", (1,), {})
        assert (await event(first, kind, "admit")).verdict is Verdict.RUN
        server.kill()
        with caplog.at_level(logging.ERROR, logger="cachify.tasks"):
            await event(first, kind, "succeeded", 1)  # keeps its outcome; the release is owed
        assert first.state is State.ENDED
        assert any("finishing its run" in r.getMessage() for r in caplog.records)
        assert owed.count(c) == 1
        server.start()  # same port and data directory
        assert holder(p) == "t1"  # without the owed release, t2 would be skipped for t1's hold
        second = Delivery(p, "t2", (1,), {})
        assert (await event(second, kind, "admit")).verdict is Verdict.RUN
        assert holder(p) == "t2"
        assert owed.count(c) == 0
        await event(second, kind, "succeeded", 1)
        assert holder(p) is None
    finally:
        server.stop()


async def test_an_unreachable_cache_fails_open_by_default(kind: str, caplog: Any) -> None:
    d = Delivery(down_policy(cache_key="c-{x}"), "t1", (1,), {})
    with caplog.at_level(logging.WARNING, logger="cachify.tasks"):
        assert (await event(d, kind, "admit")).verdict is Verdict.RUN
        await event(d, kind, "succeeded", 5)  # nothing to write back: no second error
    assert d.state is State.ENDED
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "t1" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"once_key": "o-{x}"}, Verdict.REQUEUE),  # on_store_error="defer" is the default
        ({"cache_key": "c-{x}", "cache_on_backend_error": "raise"}, Verdict.REQUEUE),
        ({"pool_key": "p", "pool_max_size": 1, "on_store_error": "run"}, Verdict.RUN),
        ({"once_key": "o-{x}", "on_store_error": "fail"}, None),
    ],
)
async def test_an_unreachable_store_defers_runs_or_fails(
    kind: str, raw: dict[str, Any], expected: Verdict | None
) -> None:
    d = Delivery(down_policy(**raw), "t1", (1,), {}, requeues=3)
    if expected is None:
        with pytest.raises(CachifyBackendError):
            await event(d, kind, "admit")
        assert d.state is State.ENDED
        return
    decision = await event(d, kind, "admit")
    assert decision.verdict is expected
    if expected is Verdict.REQUEUE:
        assert d.state is State.REQUEUING
        assert "store unreachable" in decision.reason
        assert 0 <= decision.delay_s <= 4.0  # 0.5 s doubling per requeue, full jitter
    else:
        assert d.state is State.RUNNING
        await event(d, kind, "succeeded", 1)  # held nothing: nothing to release


async def test_an_outage_is_logged_once(kind: str, caplog: Any) -> None:
    p = down_policy(once_key="o-{x}")
    with caplog.at_level(logging.DEBUG, logger="cachify.tasks"):
        for n in range(5):
            await event(Delivery(p, f"t{n}", (n,), {}), kind, "admit")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "store unreachable" in warnings[0].getMessage()


async def test_a_claim_that_cannot_reach_the_store(kind: str) -> None:
    failing = down_policy(once_key="o-{x}")

    async def claim_it() -> Any:
        return failing.claim("t1", (1,), {}) if kind == "sync" else await failing.aclaim("t1", (1,), {})

    with pytest.raises(CachifyBackendError, match=rf"task '{TASK}': not sent.*once_on_store_error='send'"):
        await claim_it()
    resent = (
        failing.claim("t1", (1,), {}, resend=True)
        if kind == "sync"
        else await failing.aclaim("t1", (1,), {}, resend=True)
    )
    assert resent.key is None  # a retry or requeue is sent whatever the store says
    sending = down_policy(once_key="o-{x}", once_on_store_error="send")
    claim = sending.claim("t1", (1,), {}) if kind == "sync" else await sending.aclaim("t1", (1,), {})
    assert claim.key is None
    assert not claim.duplicate


async def test_a_delivery_ended_during_its_admission_keeps_nothing(cachify: Cachify) -> None:
    """Taskiq may end a delivery (a timeout) while a sync task's admission is still in flight on
    the loop: what that admission wins is released, not renewed forever."""
    import asyncio

    p = policy(cachify, once_key="o-{x}", pool_key="p", pool_max_size=1)
    await p.aclaim("t1", (1,), {})
    d = Delivery(p, "t1", (1,), {})
    admitting = asyncio.create_task(d.aadmit())
    await asyncio.sleep(0)  # the admission is under way (on Redis: awaiting its first reply)
    await d.aended()
    decision = await admitting
    assert d.state is State.ENDED
    assert decision.verdict in (Verdict.SKIP, Verdict.RUN), decision  # RUN: it finished before the end came
    assert holder(p) is None
    assert slots(p) == 0
