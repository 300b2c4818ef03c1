"""Declaring options: validated when the actor is declared (or the message sent), errors naming
the actor and the option; per-message overrides through ``send_with_options``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.results.backends import StubBackend

from cachify_dramatiq import CachifyDuplicateError, CachifyTaskOptionError

RESULT_TIMEOUT_MS = 10_000


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"once_key": "k-{x}", "once_mode": "later"}, r"task 'declared': once_mode must be"),
        ({"once_key": "k-{y}"}, r"task 'declared': once_key: .*y"),
        ({"once_key": "k-{x}", "once_ttl": 0}, r"task 'declared': once_ttl must be a positive"),
        ({"pool_key": "p"}, r"task 'declared': pool_max_size must be an int >= 1"),
        ({"pool_key": "p", "pool_max_size": 2, "pool_on_full": "wait"}, r"task 'declared': pool_on_full"),
        ({"pool_key": "p", "pool_max_size": 2, "pool_backoff": (5, 1)}, r"task 'declared': pool_backoff"),
        ({"once_ttl": 5}, r"task 'declared': once_ttl given without once_key"),
        ({"cache_key": "c-{x}", "cache_ttl": -1}, r"task 'declared': cache_ttl must be a positive"),
    ],
)
def test_bad_options_fail_at_declaration(
    stub_broker: StubBroker, options: dict[str, Any], match: str
) -> None:
    def declared(x: int) -> None: ...

    with pytest.raises(CachifyTaskOptionError, match=match):
        dramatiq.actor(actor_name="declared", **options)(declared)

    assert "declared" not in stub_broker.actors


def test_misspelt_option_is_refused_by_dramatiq(stub_broker: StubBroker) -> None:
    # Dramatiq checks names against actor_options before any middleware sees the actor.
    def misspelt() -> None: ...

    with pytest.raises(ValueError, match="once_kye"):
        dramatiq.actor(once_kye="k")(misspelt)


def test_bad_message_option_fails_at_send(stub_broker: StubBroker) -> None:
    @dramatiq.actor(once_key="k-{x}")
    def sync(x: int) -> None: ...

    with pytest.raises(CachifyTaskOptionError, match=r"task 'sync': once_mode"):
        sync.send_with_options(args=(1,), once_mode="soon")
    with pytest.raises(CachifyTaskOptionError, match=r"task 'sync': unknown option\(s\) once_kye"):
        sync.send_with_options(args=(1,), once_kye="x")
    with pytest.raises(CachifyTaskOptionError, match=r"task 'sync': a per-message pool_on_full"):
        sync.send_with_options(args=(1,), pool_key="p", pool_max_size=1, pool_on_full=print)
    assert stub_broker.queues["default"].qsize() == 0


def test_message_options_turn_dedup_on_and_off(stub_broker: StubBroker) -> None:
    @dramatiq.actor
    def plain(x: int) -> None: ...

    @dramatiq.actor(once_key="held-{x}")
    def held(x: int) -> None: ...

    first = plain.send_with_options(args=(1,), once_key="plain-{x}")
    assert plain.send_with_options(args=(1,), once_key="plain-{x}").message_id == first.message_id
    assert plain.send(1).message_id != first.message_id  # without the option: no dedup

    first = held.send(1)
    assert held.send(1).message_id == first.message_id
    unheld = held.send_with_options(args=(1,), once_key=None)
    assert unheld.message_id != first.message_id
    assert stub_broker.queues["default"].qsize() == 4


def test_message_option_once_raise(stub_broker: StubBroker) -> None:
    @dramatiq.actor(once_key="k-{x}")
    def sync(x: int) -> None: ...

    first = sync.send(1)
    with pytest.raises(CachifyDuplicateError) as info:
        sync.send_with_options(args=(1,), once_raise=True)
    assert info.value.holder_id == first.message_id


def test_templates_bind_to_the_signature_with_defaults(
    stub_broker: StubBroker, make_worker: Callable[..., dramatiq.Worker], results_backend: StubBackend
) -> None:
    @dramatiq.actor(once_key="sync-{region}-{order_id}", store_results=True)
    def sync(order_id: int, region: str = "eu") -> str:
        return f"{region}:{order_id}"

    first = sync.send(7)
    assert sync.send(order_id=7, region="eu").message_id == first.message_id
    assert sync.send(7, "us").message_id != first.message_id
    make_worker()
    assert first.get_result(backend=results_backend, block=True, timeout=RESULT_TIMEOUT_MS) == "eu:7"


def test_direct_call_runs_the_function_plainly(stub_broker: StubBroker) -> None:
    calls: list[int] = []

    @dramatiq.actor(once_key="k-{x}", pool_key="p", pool_max_size=1, cache_key="c-{x}")
    def sync(x: int) -> int:
        calls.append(x)
        return x

    sync.send(1)  # holds k-1
    assert sync(1) == 1
    assert sync(1) == 1
    assert calls == [1, 1]


def test_a_message_with_bad_options_from_elsewhere_is_rejected_not_run(
    stub_broker: StubBroker, make_worker: Callable[..., dramatiq.Worker]
) -> None:
    runs: list[int] = []

    @dramatiq.actor(once_key="k-{x}")
    def sync(x: int) -> None:
        runs.append(x)

    # As a producer without the middleware would send it: straight onto the queue.
    message = sync.message_with_options(args=(1,), once_mode="soon")
    stub_broker.queues["default"].put(message.encode())
    worker = make_worker()
    stub_broker.join("default", timeout=10_000, fail_fast=False)
    worker.join()
    assert runs == []
    assert len(stub_broker.dead_letters) == 1
