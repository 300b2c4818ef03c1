# mypy: disable-error-code="untyped-decorator"
# (celery ships no type information, so every @app.task is an untyped decorator)
"""Every publish path claims the hold: ``app.send_task`` by name, signatures, canvas members, a
retry's re-send — over the real Redis broker, with no worker (only the sending side is tested;
the messages stay in the broker database, flushed around each test)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, chain, group

from cachify_celery import CachifyTask, install
from cachify_celery.worker_signals import check_at_start
from cachify_core import Cachify, CachifyInitError, init_cachify
from cachify_core.tasks import CachifyDuplicateError

from .support import RedisDbs, hold_holder

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app(redis_dbs: RedisDbs, cachify_global: Cachify) -> Iterator[Celery]:
    redis_dbs.flush(redis_dbs.broker)
    app = Celery("paths", broker=redis_dbs.broker, backend=redis_dbs.backend, set_as_current=False)
    install(app)
    yield app
    redis_dbs.flush(redis_dbs.broker)


def _declare(app: Celery) -> tuple[Any, Any]:
    @app.task(shared=False, once_key="order-{order_id}")
    def check(order_id: int) -> int:
        return order_id

    @app.task(shared=False)
    def done(n: int) -> int:
        return n

    return check, done


def _returns_within(call: Any, seconds: float) -> Any:
    """Run ``call`` in a thread: its result or exception, or a failure if it hangs."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the call hung"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_send_task_by_name_is_deduplicated(app: Celery) -> None:
    check, _ = _declare(app)
    first = app.send_task(check.name, (42,))
    assert hold_holder(check, 42) == first.id
    second = app.send_task(check.name, (42,))
    assert second.id == first.id  # the holder's handle: nothing new was published


def test_a_signature_is_deduplicated(app: Celery) -> None:
    check, _ = _declare(app)
    first = check.s(7).apply_async()
    assert check.s(7).apply_async().id == first.id


def test_a_duplicate_group_member_raises_instead_of_hanging(app: Celery) -> None:
    check, _ = _declare(app)
    holder = check.delay(42)
    with pytest.raises(CachifyDuplicateError) as info:
        _returns_within(lambda: group(check.s(42), check.s(43)).apply_async(), 10)
    assert info.value.holder_id == holder.id


def test_a_duplicate_chain_head_raises_instead_of_hanging(app: Celery) -> None:
    check, done = _declare(app)
    holder = check.delay(42)
    with pytest.raises(CachifyDuplicateError) as info:
        _returns_within(lambda: chain(check.si(42), done.si(1)).apply_async(), 10)
    assert info.value.holder_id == holder.id


def test_a_retry_is_sent_even_when_another_task_holds_the_key(app: Celery, caplog: Any) -> None:
    check, _ = _declare(app)
    other = check.delay(5)  # took the key, e.g. after the first run's hold expired
    with caplog.at_level(logging.INFO, logger="cachify.tasks"):
        retry = check.apply_async((5,), task_id="first-run", retries=1)
    assert retry.id == "first-run"  # published, not swapped for the holder's handle
    assert hold_holder(check, 5) == other.id
    assert any("re-sent while" in r.getMessage() and "first-run" in r.getMessage() for r in caplog.records)


def test_once_key_none_sends_without_deduplication(app: Celery) -> None:
    check, _ = _declare(app)
    first = check.delay(9)
    second = check.apply_async((9,), once_key=None)
    assert second.id != first.id
    assert hold_holder(check, 9) == first.id


def test_the_in_memory_backend_is_refused_at_send_with_a_real_broker(redis_dbs: RedisDbs) -> None:
    app = Celery("mem", broker=redis_dbs.broker, set_as_current=False, task_cls=CachifyTask)
    instance = init_cachify(is_global=False)

    @app.task(shared=False, cachify=instance, once_key="k-{x}")
    def keyed(x: int) -> int:
        return x

    with pytest.raises(CachifyInitError, match=r"in-memory backend.*init_cachify\(url="):
        keyed.delay(1)
    with pytest.raises(SystemExit, match="in-memory backend"):
        check_at_start(app)


def test_worker_start_refuses_options_a_plain_task_would_ignore(redis_dbs: RedisDbs) -> None:
    app = Celery("plain", broker=redis_dbs.broker, set_as_current=False)

    @app.task(shared=False, once_key="k-{x}")
    def forgotten(x: int) -> int:
        return x

    with pytest.raises(SystemExit, match=r"forgotten.*once_key.*not a CachifyTask"):
        check_at_start(app)


def test_outside_running_task_hides_this_threads_tasks_and_puts_them_back() -> None:
    # What a hand-over's publish runs under (room.publish_handover): send_task sees no running
    # task, and the thread's stack is whole again afterwards, even when the publish raises; a
    # thread of its own, so its stack is its own.
    from celery import _state

    from cachify_celery.room import outside_running_task

    outer, inner = object(), object()
    seen: dict[str, Any] = {}

    def run() -> None:
        _state._task_stack.push(outer)
        _state._task_stack.push(inner)
        try:
            with outside_running_task():
                seen["inside"] = _state.get_current_task()
            seen["after"] = _state.get_current_task()
            with pytest.raises(RuntimeError), outside_running_task():
                raise RuntimeError("publish failed")
            seen["after error"] = _state.get_current_task()
            assert _state._task_stack.pop() is inner
            seen["below"] = _state.get_current_task()
            assert _state._task_stack.pop() is outer
        except BaseException as exc:  # reported below: an assertion in a thread fails nothing
            seen["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)
    assert "error" not in seen, seen.get("error")
    assert seen == {"inside": None, "after": inner, "after error": inner, "below": outer}
    assert _state.get_current_task() is None  # this thread's stack was never touched
