# mypy: disable-error-code="untyped-decorator"
# (celery ships no type information, so every @app.task is an untyped decorator)
"""Eager mode (``task_always_eager``) applies every option as a worker does, on a real Redis.

Runs are inline, so a run "in progress" is one blocked in another thread of the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Ignore

from cachify_celery import CachifyDuplicateError, CachifyPoolFullError, CachifyTask
from cachify_core import Cachify, pooled

from .support import hold_holder, pool_size, wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app(cachify_global: Cachify) -> Any:
    app = Celery("eager", set_as_current=False, task_cls=CachifyTask)
    app.conf.update(task_always_eager=True, task_serializer="json")
    return app


class Blocker:
    """Keeps a task body running (in a thread) until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.ids: list[str] = []

    def enter(self, task_id: str) -> None:
        self.ids.append(task_id)
        self.started.set()
        assert self.release.wait(10)


@pytest.fixture
def background() -> Iterator[Callable[[Callable[[], Any]], threading.Thread]]:
    threads: list[threading.Thread] = []

    def start(target: Callable[[], Any]) -> threading.Thread:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        threads.append(thread)
        return thread

    yield start
    for thread in threads:
        thread.join(10)


@pytest.fixture
def held_pool(cachify_global: Cachify, background: Any) -> Callable[[str, float], None]:
    """Occupy every slot of a 1-slot pool ``key`` for ``seconds`` from another thread."""

    def hold(key: str, seconds: float) -> None:
        entered = threading.Event()

        def holder() -> None:
            with cachify_global.pool(key, max_size=1):
                entered.set()
                time.sleep(seconds)

        background(holder)
        assert entered.wait(5)

    return hold


# -- cache ------------------------------------------------------------------------------------
def test_a_cache_hit_returns_the_stored_value_as_success_without_running(app: Any) -> None:
    calls: list[str] = []

    @app.task(shared=False, cache_key="report-{day}", cache_ttl=60)
    def build_report(day: str) -> dict[str, str]:
        calls.append(day)
        return {"day": day}

    first, hit = build_report.delay("mon"), build_report.delay("mon")
    assert first.get() == hit.get() == {"day": "mon"}
    assert hit.state == "SUCCESS"
    assert calls == ["mon"]


def test_a_failure_is_not_cached(app: Any) -> None:
    calls: list[str] = []

    @app.task(shared=False, cache_key="report-{day}")
    def flaky(day: str) -> str:
        calls.append(day)
        if len(calls) == 1:
            raise RuntimeError("first run fails")
        return day

    assert flaky.delay("mon").state == "FAILURE"
    assert flaky.delay("mon").get() == "mon"
    assert flaky.delay("mon").get() == "mon"
    assert calls == ["mon", "mon"]


# -- dedup ------------------------------------------------------------------------------------
def test_200_sends_while_one_runs_return_the_holders_result_and_run_once(app: Any, background: Any) -> None:
    blocker = Blocker()

    @app.task(shared=False, bind=True, once_key="check-order-{order_id}")
    def check_order(self: Any, order_id: int) -> int:
        blocker.enter(self.request.id)
        return order_id

    runner = background(lambda: check_order.delay(1))
    assert blocker.started.wait(5)
    duplicates = [check_order.delay(1) for _ in range(200)]
    blocker.release.set()
    runner.join(5)  # eager runs forbid result.get() process-wide while any is in progress
    other = check_order.delay(2)  # another key is not a duplicate

    assert {d.id for d in duplicates} == {blocker.ids[0]}
    assert other.get() == 2
    assert wait_until(lambda: hold_holder(check_order, 1) is None, 5)
    assert blocker.ids == [blocker.ids[0], other.id]


def test_once_raise_raises_with_the_holders_id(app: Any, background: Any) -> None:
    blocker = Blocker()

    @app.task(shared=False, bind=True, once_key="o-{x}", once_raise=True)
    def only_once(self: Any, x: int) -> int:
        blocker.enter(self.request.id)
        return x

    runner = background(lambda: only_once.delay(1))
    assert blocker.started.wait(5)
    with pytest.raises(CachifyDuplicateError) as info:
        only_once.delay(1)
    blocker.release.set()
    runner.join(5)  # eager runs forbid result.get() process-wide while any is in progress
    assert info.value.holder_id == blocker.ids[0]


def test_per_call_once_raise_overrides_the_declaration(app: Any, background: Any) -> None:
    blocker = Blocker()

    @app.task(shared=False, bind=True, once_key="o-{x}")
    def quiet(self: Any, x: int) -> int:
        blocker.enter(self.request.id)
        return x

    runner = background(lambda: quiet.delay(1))
    assert blocker.started.wait(5)
    assert quiet.delay(1).id == blocker.ids[0]
    with pytest.raises(CachifyDuplicateError):
        quiet.apply_async((1,), once_raise=True)
    blocker.release.set()
    runner.join(5)  # eager runs forbid result.get() process-wide while any is in progress


def test_mode_running_skips_a_duplicate_at_run_time(app: Any, background: Any) -> None:
    blocker = Blocker()

    @app.task(shared=False, bind=True, once_key="r-{x}", once_mode="running")
    def running(self: Any, x: int) -> int:
        blocker.enter(self.request.id)
        return x

    runner = background(lambda: running.delay(1))
    assert blocker.started.wait(5)
    duplicate = running.delay(1)  # sent (nothing held at enqueue), then skipped
    blocker.release.set()
    runner.join(5)  # eager runs forbid result.get() process-wide while any is in progress
    assert duplicate.state == "IGNORED"
    assert len(blocker.ids) == 1


def test_mode_until_started_lets_one_more_be_sent_once_it_runs(app: Any, background: Any) -> None:
    blocker = Blocker()

    @app.task(shared=False, bind=True, once_key="u-{x}", once_mode="until_started")
    def until_started(self: Any, x: int) -> int:
        blocker.enter(self.request.id)
        return x

    runner = background(lambda: until_started.delay(1))
    assert blocker.started.wait(5)
    assert hold_holder(until_started, 1) is None  # released when the run started
    blocker.release.set()
    runner.join(5)  # eager runs forbid result.get() process-wide while any is in progress
    assert until_started.delay(1).get() == 1
    assert len(blocker.ids) == 2


def test_retry_keeps_the_hold_and_the_end_releases_it(app: Any, cachify_global: Cachify) -> None:
    seen: list[tuple[int, str | None]] = []

    @app.task(shared=False, bind=True, once_key="retry-{x}", max_retries=1, default_retry_delay=0)
    def retried(self: Any, x: int) -> int:
        seen.append((self.request.retries, hold_holder(retried, x)))
        if self.request.retries == 0:
            raise self.retry()
        return x

    result = retried.delay(1)
    assert result.get() == 1
    assert seen == [(0, result.id), (1, result.id)]
    assert hold_holder(retried, 1) is None


@pytest.mark.parametrize("how", ["exception", "ignore"])
def test_a_failed_or_ignored_run_releases_the_hold(app: Any, how: str) -> None:
    @app.task(shared=False, once_key="f-{x}")
    def failing(x: int) -> None:
        if how == "ignore":
            raise Ignore()
        raise RuntimeError("boom")

    first = failing.delay(1)
    assert first.state == ("IGNORED" if how == "ignore" else "FAILURE")
    assert hold_holder(failing, 1) is None
    assert failing.delay(1).id != first.id


def test_keys_match_across_json_serialization(app: Any) -> None:
    """A tuple argument arrives as a list: claim and run must still name the same key."""

    @app.task(shared=False, once_key="pair-{pair}")
    def paired(pair: Any) -> list[int]:
        return list(pair)

    first = paired.delay((1, 2))
    assert first.get() == [1, 2]
    assert hold_holder(paired, [1, 2]) is None
    assert hold_holder(paired, (1, 2)) is None
    assert paired.delay((1, 2)).id != first.id


# -- pools ------------------------------------------------------------------------------------
def test_a_full_pool_requeues_with_the_same_id_without_spending_retries(
    app: Any, held_pool: Callable[[str, float], None]
) -> None:
    seen: list[tuple[str, int]] = []

    @app.task(
        shared=False, bind=True, pool_key="stripe", pool_max_size=1, pool_backoff=(0.05, 0.1), max_retries=0
    )
    def charge(self: Any, cents: int) -> int:
        seen.append((self.request.id, self.request.retries))
        return cents

    held_pool("stripe", 0.3)
    started = time.monotonic()
    result = charge.delay(500)
    assert result.get() == 500
    assert time.monotonic() - started >= 0.2  # waited for the holder, in backoff steps
    assert seen == [(result.id, 0)]
    assert pool_size(charge, 0) == 0


@pytest.mark.parametrize(
    ("on_full", "state", "value"),
    [
        ("drop", "IGNORED", None),
        ("raise", "FAILURE", CachifyPoolFullError),
        (lambda cents: f"later {cents}", "SUCCESS", "later 5"),
    ],
)
def test_pool_on_full(
    app: Any, held_pool: Callable[[str, float], None], on_full: Any, state: str, value: Any
) -> None:
    calls: list[int] = []

    @app.task(shared=False, pool_key="stripe", pool_max_size=1, pool_on_full=on_full)
    def charge(cents: int) -> int:
        calls.append(cents)
        return cents

    held_pool("stripe", 0.3)
    result = charge.delay(5)
    assert result.state == state
    if isinstance(value, type):
        assert isinstance(result.result, value)
    elif value is not None:
        assert result.get() == value
    assert calls == []


def test_pool_max_requeues_fails_with_pool_full(app: Any, held_pool: Callable[[str, float], None]) -> None:
    @app.task(
        shared=False, pool_key="stripe", pool_max_size=1, pool_backoff=(0.01, 0.02), pool_max_requeues=2
    )
    def charge(cents: int) -> int:
        return cents

    held_pool("stripe", 0.3)
    result = charge.delay(5)
    assert result.state == "FAILURE"
    assert isinstance(result.result, CachifyPoolFullError)
    assert "gave up after 2 requeues" in str(result.result)


def test_a_stacked_pooled_decorator_is_requeued_when_full(
    app: Any, cachify_global: Cachify, held_pool: Callable[[str, float], None]
) -> None:
    calls: list[int] = []

    @app.task(shared=False)
    @pooled(key="stripe", max_size=1, raise_on_full=True)
    def charge(cents: int) -> int:
        calls.append(cents)
        return cents

    charge.pool_backoff = (0.05, 0.1)  # no effect: the declared options were parsed already
    held_pool("stripe", 0.3)
    result = charge.delay(7)
    assert result.get() == 7
    assert calls == [7]
