"""The shared task policy (``cachify_core.tasks``) used directly, without any task framework.

Options are parsed with ``parse_task_options`` and validated at declaration time; the policy's
``claim`` / ``admit`` / ``finish`` / ``unclaim`` / ``release_requeued`` (and their asyncio twins)
are driven by hand the way the Celery, Dramatiq and Taskiq integrations drive them. Every
behavioural test runs on both backends of the ``cachify`` fixture and with both the blocking
methods and the ``a*`` twins. The contract is docs/TASK_OPTIONS.md.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from cachify_core import Cachify, CachifyBackendError, CachifyLockError, CachifyPoolFullError, init_cachify
from cachify_core.tasks import (
    Admission,
    CachifyDuplicateError,
    CachifyTaskOptionError,
    Claim,
    Outcome,
    RunHandle,
    TaskPolicy,
    Verdict,
    logs,
    parse_task_options,
)

from .servers import free_port

TASK = "tasks.job"
#: Lease of the renewed hold and slot in the renewal test, and how long the "run" lasts there.
TTL_S = 1.0
WORK_S = 2.5
#: After finish, how long we watch for renewals that should no longer happen (> 2 intervals).
QUIET_S = 0.8


def job(x: int, y: int = 0) -> int:
    return x + y


def parse(**raw: Any) -> Any:
    return parse_task_options(TASK, job, raw)


# -- parse_task_options ------------------------------------------------------------------------
BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"once_keys": "o-{x}"}, "once_keys"),
    ({"pool_size": 2}, "pool_size"),
    ({"cache_tll": 5}, "cache_tll"),
    ({"once_mode": "queued"}, "once_mode"),
    ({"once_ttl": 5}, "once_ttl"),
    ({"once_raise": True}, "once_raise"),
    ({"cache_ttl": 5}, "cache_ttl"),
    ({"pool_max_size": 3}, "pool_max_size"),
    ({"pool_on_full": "drop"}, "pool_on_full"),
    ({"pool_key": "p"}, "pool_max_size"),
    ({"pool_key": "p", "pool_max_size": 0}, "pool_max_size"),
    ({"pool_key": "p", "pool_max_size": True}, "pool_max_size"),
    ({"pool_key": "p", "pool_max_size": -1}, "pool_max_size"),
    ({"pool_key": "p", "pool_max_size": 1.5}, "pool_max_size"),
    ({"once_key": "o-{x}", "once_mode": "started"}, "once_mode"),
    ({"once_key": "o-{x}", "once_ttl": 0}, "once_ttl"),
    ({"once_key": "o-{x}", "once_ttl": -1}, "once_ttl"),
    ({"once_key": "o-{x}", "once_ttl": True}, "once_ttl"),
    ({"once_key": "o-{x}", "once_ttl": float("inf")}, "once_ttl"),
    ({"once_key": "o-{x}", "once_raise": "yes"}, "once_raise"),
    ({"pool_key": "p", "pool_max_size": 1, "pool_on_full": "wait"}, "pool_on_full"),
    ({"pool_key": "p", "pool_max_size": 1, "pool_slot_ttl": 0}, "pool_slot_ttl"),
    ({"pool_backoff": (1,)}, "pool_backoff"),
    ({"pool_backoff": (1, 2, 3)}, "pool_backoff"),
    ({"pool_backoff": 5}, "pool_backoff"),
    ({"pool_backoff": (10, 1)}, "pool_backoff"),
    ({"pool_backoff": (0, 1)}, "pool_backoff"),
    ({"pool_backoff": (1, -1)}, "pool_backoff"),
    ({"pool_backoff": (-1, 1)}, "pool_backoff"),
    ({"pool_max_requeues": -1}, "pool_max_requeues"),
    ({"pool_max_requeues": True}, "pool_max_requeues"),
    ({"pool_max_requeues": 1.0}, "pool_max_requeues"),
    ({"cache_key": "c-{x}", "cache_ttl": 0}, "cache_ttl"),
    ({"once_key": "o-{nope}"}, "once_key"),
    ({"pool_key": "p-{nope}", "pool_max_size": 1}, "pool_key"),
    ({"cache_key": "c-{nope}"}, "cache_key"),
    ({"once_key": ""}, "once_key"),
]


@pytest.mark.parametrize(("raw", "option"), BAD_OPTIONS, ids=[repr(r) for r, _ in BAD_OPTIONS])
def test_bad_options_fail_naming_task_and_option(raw: dict[str, Any], option: str) -> None:
    with pytest.raises(CachifyTaskOptionError) as info:
        parse(**raw)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert TASK in message, message
    assert option in message, message


def test_backoff_and_max_requeues_stand_alone_and_foreign_names_are_ignored() -> None:
    opts = parse(pool_backoff=(0.5, 4), pool_max_requeues=3, queue="default", retries=5, bind=True)
    assert opts.pool_key is None
    assert opts.once_key is None
    assert opts.cache_key is None
    assert opts.pool_backoff_s == (0.5, 4.0)
    assert opts.pool_max_requeues == 3
    assert not opts.active
    assert parse(pool_max_requeues=0).pool_max_requeues == 0
    assert parse(pool_backoff=[2, 2]).pool_backoff_s == (2.0, 2.0)


def test_defaults_and_accepted_values() -> None:
    opts = parse(once_key="o-{x}", pool_key="p", pool_max_size=2, cache_key="c-{x}", cache_ttl=None)
    assert opts.once_mode == "queued"
    assert opts.once_ttl_s == 3600.0
    assert opts.once_raise is False
    assert opts.pool_on_full == "requeue"
    assert opts.pool_slot_ttl_s == 60.0
    assert opts.pool_backoff_s == (1.0, 60.0)
    assert opts.pool_max_requeues is None
    assert opts.cache_ttl_s is None
    assert opts.claims_at_enqueue
    assert not parse(once_key="o-{x}", once_mode="running").claims_at_enqueue
    assert parse(once_key="o-{x}", once_mode="until_started").claims_at_enqueue
    assert callable(parse(pool_key="p", pool_max_size=1, pool_on_full=lambda x, y=0: x).pool_on_full)


# -- a driver for both flavours --------------------------------------------------------------
class Driver:
    """The policy's blocking methods or their asyncio twins behind one awaitable interface."""

    def __init__(self, policy: TaskPolicy, kind: str) -> None:
        self.policy = policy
        self.kind = kind

    async def _call(self, name: str, *args: Any) -> Any:
        if self.kind == "sync":
            return getattr(self.policy, name)(*args)
        result = getattr(self.policy, "a" + name)(*args)
        assert inspect.isawaitable(result)
        return await result

    async def claim(
        self, task_id: str, args: tuple[Any, ...] = (1,), kwargs: Mapping[str, Any] | None = None
    ) -> Claim:
        return await self._call("claim", task_id, args, kwargs or {})  # type: ignore[no-any-return]

    async def unclaim(self, task_id: str, claim: Claim) -> None:
        await self._call("unclaim", task_id, claim)

    async def admit(
        self,
        task_id: str,
        args: tuple[Any, ...] = (1,),
        kwargs: Mapping[str, Any] | None = None,
        requeues: int = 0,
    ) -> Admission:
        return await self._call("admit", task_id, args, kwargs or {}, requeues)  # type: ignore[no-any-return]

    async def finish(self, handle: RunHandle | None, outcome: Outcome, result: Any = None) -> None:
        assert handle is not None
        await self._call("finish", handle, outcome, result)

    async def release_requeued(
        self, task_id: str, args: tuple[Any, ...] = (1,), kwargs: Mapping[str, Any] | None = None
    ) -> None:
        await self._call("release_requeued", task_id, args, kwargs or {})

    # -- state, read on the sync backend (the same store for both flavours) -----------------
    def holder(self, args: tuple[Any, ...] = (1,)) -> str | None:
        key = self.policy.once_key(args, {})
        assert key is not None
        return self.policy.cachify.sync_backend.lock_holder(key)

    def slots(self, args: tuple[Any, ...] = (1,)) -> int:
        c = self.policy.cachify
        template = self.policy.options.pool_key
        assert template is not None
        return c.sync_backend.pool_size(c.prefix + template.format(args, {}))


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(cachify: Cachify, kind: str) -> Callable[..., Driver]:
    def factory(**raw: Any) -> Driver:
        return Driver(TaskPolicy(parse(**raw), cachify), kind)

    return factory


async def run_ok(d: Driver, task_id: str, args: tuple[Any, ...] = (1,), requeues: int = 0) -> RunHandle:
    admission = await d.admit(task_id, args, requeues=requeues)
    assert admission.verdict is Verdict.RUN, admission
    assert admission.handle is not None
    return admission.handle


# -- claim -----------------------------------------------------------------------------------
async def test_claim_then_duplicate_then_retry_then_unclaim(make: Callable[..., Driver]) -> None:
    d = make(once_key="o-{x}")
    first = await d.claim("A")
    assert not first.duplicate
    assert first.holder_id is None
    assert first.key is not None
    assert d.holder() == "A"

    second = await d.claim("B")
    assert second.duplicate
    assert second.holder_id == "A"
    assert second == Claim(first.key, "A")
    assert d.holder() == "A"

    other_key = await d.claim("B", (2,))  # another key: no conflict
    assert not other_key.duplicate

    again = await d.claim("A")  # a retry / re-publish of the holder itself
    assert not again.duplicate
    assert d.holder() == "A"

    await d.unclaim("B", second)  # unclaiming a duplicate gives nothing back
    assert d.holder() == "A"
    await d.unclaim("A", first)
    assert d.holder() is None
    third = await d.claim("C")
    assert not third.duplicate
    assert d.holder() == "C"


async def test_claim_raises_with_once_raise(make: Callable[..., Driver]) -> None:
    d = make(once_key="o-{x}", once_raise=True)
    assert not (await d.claim("A")).duplicate
    with pytest.raises(CachifyDuplicateError) as info:
        await d.claim("B")
    assert isinstance(info.value, CachifyLockError)
    assert info.value.holder_id == "A"
    assert info.value.task_name == TASK
    assert d.holder() == "A"
    assert not (await d.claim("A")).duplicate  # the holder itself never conflicts


async def test_running_mode_claims_nothing_at_enqueue(make: Callable[..., Driver]) -> None:
    d = make(once_key="o-{x}", once_mode="running")
    claim_a = await d.claim("A")
    claim_b = await d.claim("B")
    assert claim_a == Claim(None)
    assert claim_b == Claim(None)
    assert d.holder() is None
    handle = await run_ok(d, "A")
    assert d.holder() == "A"
    skipped = await d.admit("B")
    assert skipped.verdict is Verdict.SKIP
    await d.finish(handle, "success")
    assert d.holder() is None


async def test_no_options_claims_and_admits_freely(make: Callable[..., Driver]) -> None:
    d = make()
    assert await d.claim("A") == Claim(None)
    handle = await run_ok(d, "A")
    await d.finish(handle, "success", 1)


# -- admit: cache, dedup ---------------------------------------------------------------------
async def test_cache_hit_returns_value_and_releases_the_queued_claim(make: Callable[..., Driver]) -> None:
    d = make(once_key="o-{x}", cache_key="c-{x}")
    assert not (await d.claim("A")).duplicate
    handle = await run_ok(d, "A")
    assert d.holder() == "A"
    await d.finish(handle, "success", {"v": 41})
    assert d.holder() is None

    assert not (await d.claim("B")).duplicate
    assert d.holder() == "B"
    hit = await d.admit("B")
    assert hit.verdict is Verdict.CACHED
    assert hit.value == {"v": 41}
    assert hit.handle is None
    assert d.holder() is None, "a cache hit must give the queued claim back"
    assert not (await d.claim("C")).duplicate

    miss = await d.admit("D", (2,))  # another key is a miss
    assert miss.verdict is Verdict.RUN
    await d.finish(miss.handle, "failure")
    assert (await d.admit("E", (2,))).verdict is Verdict.RUN  # a failure stores nothing


async def test_cache_hit_comes_before_dedup_and_slot(make: Callable[..., Driver]) -> None:
    d = make(once_key="o-{x}", cache_key="c-{x}", pool_key="p", pool_max_size=1, pool_on_full="raise")
    handle = await run_ok(d, "A")
    await d.finish(handle, "success", 7)
    blocker = await run_ok(d, "Z", (9,))  # fills the pool
    assert not (await d.claim("B")).duplicate
    hit = await d.admit("B")  # hold by B and a full pool do not matter: the cache answers first
    assert hit.verdict is Verdict.CACHED
    assert hit.value == 7
    assert d.slots() == 1
    await d.finish(blocker, "success", 0)


async def test_queued_mode_runs_the_claimer_and_skips_others(make: Callable[..., Driver]) -> None:
    d = make(once_key="o-{x}")
    assert not (await d.claim("A")).duplicate
    skipped = await d.admit("B")  # e.g. a message published around the claim
    assert skipped.verdict is Verdict.SKIP
    assert "A" in skipped.reason
    assert d.holder() == "A"
    handle = await run_ok(d, "A")
    assert (await d.admit("B")).verdict is Verdict.SKIP
    await d.finish(handle, "success")
    assert d.holder() is None


async def test_finish_success_stores_and_releases_slot_and_hold(make: Callable[..., Driver]) -> None:
    d = make(once_key="o-{x}", pool_key="p", pool_max_size=1, cache_key="c-{x}")
    assert not (await d.claim("A")).duplicate
    handle = await run_ok(d, "A")
    assert d.slots() == 1
    assert d.holder() == "A"
    await d.finish(handle, "success", "done")
    assert d.slots() == 0
    assert d.holder() is None
    again = await d.admit("B")
    assert again.verdict is Verdict.CACHED
    assert again.value == "done"
    await d.finish(handle, "success", "other")  # a second finish is a no-op
    assert (await d.admit("C")).value == "done"


async def test_finish_failure_releases(make: Callable[..., Driver]) -> None:
    d = make(once_key="o-{x}", pool_key="p", pool_max_size=1, cache_key="c-{x}")
    assert not (await d.claim("A")).duplicate
    handle = await run_ok(d, "A")
    await d.finish(handle, "failure")
    assert d.slots() == 0
    assert d.holder() is None
    assert not (await d.claim("B")).duplicate
    assert (await d.admit("B")).verdict is Verdict.RUN  # nothing was cached


async def test_finish_retry_keeps_the_queued_hold(make: Callable[..., Driver]) -> None:
    d = make(once_key="o-{x}", pool_key="p", pool_max_size=1)
    assert not (await d.claim("A")).duplicate
    handle = await run_ok(d, "A")
    await d.finish(handle, "retry")
    assert d.slots() == 0, "the slot is released across a retry"
    assert d.holder() == "A"
    dup = await d.claim("B")
    assert dup.duplicate
    assert dup.holder_id == "A"
    assert not (await d.claim("A")).duplicate  # the retry re-publishes under the same id
    retried = await run_ok(d, "A")
    await d.finish(retried, "success")
    assert d.holder() is None


async def test_finish_retry_keeps_the_running_hold(make: Callable[..., Driver]) -> None:
    d = make(once_key="o-{x}", once_mode="running")
    handle = await run_ok(d, "A")
    await d.finish(handle, "retry")
    assert d.holder() == "A"
    assert (await d.admit("B")).verdict is Verdict.SKIP
    retried = await run_ok(d, "A")
    await d.finish(retried, "success")
    assert d.holder() is None


async def test_until_started_holds_until_the_slot_is_taken(make: Callable[..., Driver]) -> None:
    d = make(
        once_key="o-{x}",
        once_mode="until_started",
        pool_key="p",
        pool_max_size=1,
        pool_backoff=(0.01, 0.05),
    )
    blocker = await run_ok(d, "Z", (9,))
    assert not (await d.claim("A")).duplicate
    waiting = await d.admit("A")
    assert waiting.verdict is Verdict.REQUEUE
    assert d.holder() == "A", "a requeued until_started task still holds its claim"
    dup = await d.claim("B")
    assert dup.duplicate
    assert dup.holder_id == "A"

    await d.finish(blocker, "success")
    handle = await run_ok(d, "A", requeues=1)
    assert d.holder() is None, "the claim ends when the run starts"
    assert not (await d.claim("C")).duplicate  # one queued + one running
    assert d.holder() == "C"
    await d.finish(handle, "success")
    assert d.holder() == "C", "the running task's end does not touch the next claim"


async def test_until_started_without_pool_releases_at_admit(make: Callable[..., Driver]) -> None:
    d = make(once_key="o-{x}", once_mode="until_started")
    assert not (await d.claim("A")).duplicate
    handle = await run_ok(d, "A")
    assert d.holder() is None
    assert not (await d.claim("B")).duplicate
    await d.finish(handle, "success")
    assert d.holder() == "B"


# -- admit: pool full ------------------------------------------------------------------------
async def test_pool_full_requeues_within_backoff_and_keeps_the_hold(make: Callable[..., Driver]) -> None:
    first, most = 0.5, 3.0
    d = make(once_key="o-{x}", pool_key="p", pool_max_size=1, pool_backoff=(first, most))
    blocker = await run_ok(d, "Z", (9,))
    assert not (await d.claim("A")).duplicate
    for requeues in (0, 1, 2, 5, 40):
        admission = await d.admit("A", requeues=requeues)
        assert admission.verdict is Verdict.REQUEUE, admission
        assert 0.0 <= admission.delay_s <= min(most, first * 2**requeues), (requeues, admission.delay_s)
        assert admission.handle is None
        assert d.holder() == "A"
        assert d.slots() == 1
    dup = await d.claim("B")
    assert dup.duplicate
    assert dup.holder_id == "A"

    await d.release_requeued("A")  # the requeue could not be published
    assert d.holder() is None
    assert not (await d.claim("B")).duplicate
    await d.finish(blocker, "success")


@pytest.mark.parametrize("mode", ["queued", "until_started"])
async def test_pool_full_drop_skips_and_releases(make: Callable[..., Driver], mode: str) -> None:
    d = make(once_key="o-{x}", once_mode=mode, pool_key="p", pool_max_size=1, pool_on_full="drop")
    blocker = await run_ok(d, "Z", (9,))
    assert not (await d.claim("A")).duplicate
    dropped = await d.admit("A")
    assert dropped.verdict is Verdict.SKIP
    assert d.holder() is None
    assert d.slots() == 1
    assert not (await d.claim("B")).duplicate
    await d.finish(blocker, "success")


@pytest.mark.parametrize("mode", ["queued", "until_started"])
async def test_pool_full_callable_returns_its_value_and_releases(
    make: Callable[..., Driver], mode: str
) -> None:
    seen: list[tuple[Any, ...]] = []

    def on_full(x: int, y: int = 0) -> str:
        seen.append((x, y))
        return f"full:{x}:{y}"

    d = make(once_key="o-{x}", once_mode=mode, pool_key="p", pool_max_size=1, pool_on_full=on_full)
    blocker = await run_ok(d, "Z", (9,))
    assert not (await d.claim("A")).duplicate
    admission = await d.admit("A", (1,), {"y": 4})
    assert admission.verdict is Verdict.RETURN
    assert admission.value == "full:1:4"
    assert seen == [(1, 4)]
    assert d.holder() is None
    assert not (await d.claim("B")).duplicate
    await d.finish(blocker, "success")


@pytest.mark.parametrize("mode", ["queued", "until_started"])
async def test_pool_full_raise_raises_and_releases(make: Callable[..., Driver], mode: str) -> None:
    d = make(once_key="o-{x}", once_mode=mode, pool_key="p", pool_max_size=1, pool_on_full="raise")
    blocker = await run_ok(d, "Z", (9,))
    assert not (await d.claim("A")).duplicate
    with pytest.raises(CachifyPoolFullError):
        await d.admit("A")
    assert d.holder() is None
    assert d.slots() == 1
    assert not (await d.claim("B")).duplicate
    await d.finish(blocker, "success")


@pytest.mark.parametrize("mode", ["queued", "until_started"])
async def test_pool_max_requeues_exceeded_raises(make: Callable[..., Driver], mode: str) -> None:
    d = make(
        once_key="o-{x}",
        once_mode=mode,
        pool_key="p",
        pool_max_size=1,
        pool_max_requeues=2,
        pool_backoff=(0.01, 0.02),
    )
    blocker = await run_ok(d, "Z", (9,))
    assert not (await d.claim("A")).duplicate
    assert (await d.admit("A", requeues=0)).verdict is Verdict.REQUEUE
    assert (await d.admit("A", requeues=1)).verdict is Verdict.REQUEUE
    with pytest.raises(CachifyPoolFullError) as info:
        await d.admit("A", requeues=2)
    assert "2 requeues" in str(info.value)
    assert d.holder() is None
    assert not (await d.claim("B")).duplicate
    await d.finish(blocker, "success")


async def test_pool_max_requeues_zero_raises_at_once(make: Callable[..., Driver]) -> None:
    d = make(pool_key="p", pool_max_size=1, pool_max_requeues=0)
    blocker = await run_ok(d, "Z", (9,))
    with pytest.raises(CachifyPoolFullError):
        await d.admit("A")
    await d.finish(blocker, "success")
    assert d.slots() == 0


def test_body_pool_full_without_pool_key_requeues_and_respects_max(cachify: Cachify) -> None:
    policy = TaskPolicy(parse(pool_backoff=(0.25, 1.0), pool_max_requeues=3), cachify)
    error = CachifyPoolFullError("inner pool is full")
    for requeues in range(3):
        admission = policy.body_pool_full("t", requeues, (1,), {}, error)
        assert admission.verdict is Verdict.REQUEUE
        assert 0.0 <= admission.delay_s <= min(1.0, 0.25 * 2**requeues)
    with pytest.raises(CachifyPoolFullError) as info:
        policy.body_pool_full("t", 3, (1,), {}, error)
    assert info.value is error

    unlimited = TaskPolicy(parse(), cachify)
    assert unlimited.body_pool_full("t", 1000, (1,), {}, error).verdict is Verdict.REQUEUE


def test_body_pool_full_with_pool_key_follows_on_full(cachify: Cachify) -> None:
    error = CachifyPoolFullError("inner pool is full")
    drop = TaskPolicy(parse(pool_key="p", pool_max_size=1, pool_on_full="drop"), cachify)
    assert drop.body_pool_full("t", 0, (1,), {}, error).verdict is Verdict.SKIP
    ret = TaskPolicy(parse(pool_key="p", pool_max_size=1, pool_on_full=lambda x, y=0: x * 10), cachify)
    returned = ret.body_pool_full("t", 0, (3,), {}, error)
    assert returned.verdict is Verdict.RETURN
    assert returned.value == 30
    capped = TaskPolicy(parse(pool_key="p", pool_max_size=1, pool_max_requeues=1), cachify)
    assert capped.body_pool_full("t", 0, (1,), {}, error).verdict is Verdict.REQUEUE
    with pytest.raises(CachifyPoolFullError):
        capped.body_pool_full("t", 1, (1,), {}, error)


# -- backoff ---------------------------------------------------------------------------------
@pytest.mark.parametrize("requeues", [0, 1, 3, 6, 10, 100])
def test_backoff_is_full_jitter_within_the_bound(cachify: Cachify, requeues: int) -> None:
    first, most = 0.5, 20.0
    policy = TaskPolicy(parse(pool_backoff=(first, most)), cachify)
    bound = min(most, first * 2**requeues)
    draws = [policy.backoff_s(requeues) for _ in range(400)]
    assert all(0.0 <= d <= bound for d in draws), (bound, min(draws), max(draws))
    assert any(d > bound / 2 for d in draws), "backoff never reached above half its bound"
    assert any(d < bound / 2 for d in draws), "backoff is not jittered down"


# -- renewal ---------------------------------------------------------------------------------
async def test_hold_and_slot_are_renewed_while_admitted_and_stop_after_finish(
    make: Callable[..., Driver], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make(once_key="o-{x}", once_ttl=TTL_S, pool_key="p", pool_max_size=1, pool_slot_ttl=TTL_S)
    c = d.policy.cachify
    assert not (await d.claim("A")).duplicate
    handle = await run_ok(d, "A")
    started = time.monotonic()
    for _ in range(5):  # WORK_S of "work", checking between slices
        await asyncio.sleep(WORK_S / 5)
        assert d.holder() == "A", f"hold lost after {time.monotonic() - started:.2f}s"
        assert d.slots() == 1, f"slot lost after {time.monotonic() - started:.2f}s"
    assert (await d.claim("B")).holder_id == "A"

    backend: Any = c.sync_backend if kind == "sync" else c.async_backend
    calls: list[tuple[str, tuple[Any, ...]]] = []
    for method in ("lock_extend", "pool_extend"):
        original = getattr(backend, method)
        if inspect.iscoroutinefunction(original):

            async def arecord(*args: Any, _m: str = method, _o: Any = original) -> Any:
                calls.append((_m, args))
                return await _o(*args)

            monkeypatch.setattr(backend, method, arecord)
        else:

            def record(*args: Any, _m: str = method, _o: Any = original) -> Any:
                calls.append((_m, args))
                return _o(*args)

            monkeypatch.setattr(backend, method, record)

    await d.finish(handle, "success")
    assert d.holder() is None
    assert d.slots() == 0
    assert handle.once_lease is not None
    assert handle.once_lease.stopped
    assert handle.slot_lease is not None
    assert handle.slot_lease.stopped
    calls.clear()
    await asyncio.sleep(QUIET_S)
    renewals = [call for call in calls if handle.slot_token in call[1] or "A" in call[1]]
    assert not renewals, f"renewed after finish: {renewals}"


async def test_running_mode_hold_is_renewed(make: Callable[..., Driver]) -> None:
    d = make(once_key="o-{x}", once_mode="running", once_ttl=TTL_S)
    handle = await run_ok(d, "A")
    for _ in range(5):
        await asyncio.sleep(WORK_S / 5)
        assert d.holder() == "A"
    await d.finish(handle, "failure")
    assert d.holder() is None


async def test_a_resend_is_sent_when_the_store_is_unreachable(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A retry or requeue is never dropped at send, not even by a store that cannot be reached
    # (its run checks the hold again); a first send fails closed.
    unreachable = init_cachify(url=f"redis://127.0.0.1:{free_port()}/0", is_global=False)
    policy = TaskPolicy(parse(once_key="o-{x}"), unreachable)
    logs.store_reachable()  # outside an outage: its first line is a WARNING
    caplog.set_level(logging.WARNING, logger="cachify.tasks")
    caplog.clear()
    if kind == "sync":
        claim = policy.claim("A", (1,), {}, resend=True)
    else:
        claim = await policy.aclaim("A", (1,), {}, resend=True)
    assert claim == Claim(None)
    [line] = [r.getMessage() for r in caplog.records if r.name == "cachify.tasks"]
    assert line.startswith("cachify: store unreachable: re-sending retries and requeues")
    assert f"task {TASK}[A]" in line
    with pytest.raises(CachifyBackendError):
        await Driver(policy, kind).claim("B")


async def test_a_resent_hand_over_refreshes_its_own_hold_and_never_takes_a_free_one(
    cachify: Cachify, kind: str
) -> None:
    # A copy of a hand-over re-sent after its other copy ran and ended finds the hold free: it
    # is sent, but must not take the hold (its delivery is skipped, and nobody would give a hold
    # taken at send back). A plain resend still takes a free hold; a held one is only extended.
    policy = TaskPolicy(parse(once_key="o-{x}", once_ttl=60), cachify)
    d = Driver(policy, kind)
    key = policy.once_key((1,), {})
    assert key is not None

    async def claim(task_id: str, **flags: bool) -> Claim:
        if kind == "sync":
            return policy.claim(task_id, (1,), {}, resend=True, **flags)
        return await policy.aclaim(task_id, (1,), {}, resend=True, **flags)

    assert await claim("A", handed_over=True) == Claim(None)
    assert d.holder() is None  # free, and left free
    assert await claim("A") == Claim(key)
    assert d.holder() == "A"  # a plain resend takes it
    assert await claim("A", handed_over=True) == Claim(key)
    assert d.holder() == "A"  # its own: refreshed
    assert await claim("B", handed_over=True) == Claim(None)  # another's: sent, left alone
    assert d.holder() == "A"
