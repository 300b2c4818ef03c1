"""Per-message overrides (``send_with_options(once_ttl=...)``): the core's meaning — validated at
send, ``<group>_key=None`` turns the feature off for that message — carried in the message's
``cachify_options`` field."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import MiddlewareError

from cachify_core.tasks import OPTIONS_FIELD
from cachify_dramatiq import CachifyMessageOptionError, CachifyTaskOptionError

from .conftest import drain

GATE_TIMEOUT_S = 10.0


def test_once_key_none_turns_dedup_off_for_one_message(
    stub_broker: StubBroker, make_worker: Callable[..., dramatiq.Worker]
) -> None:
    gate, runs = threading.Event(), []
    both_started = threading.Barrier(2, timeout=GATE_TIMEOUT_S)

    @dramatiq.actor(once_key="k-{x}", once_ttl=600)
    def job(x: int) -> None:
        runs.append(x)
        both_started.wait()  # the free message runs while the holder runs: no skip
        gate.wait(GATE_TIMEOUT_S)

    held = job.send(1)
    free = job.send_with_options(args=(1,), once_key=None)
    assert free.message_id != held.message_id
    assert free.options[OPTIONS_FIELD] == {"once_key": None}  # moved out of the raw options
    assert "once_key" not in free.options
    assert job.send(1).message_id == held.message_id  # the hold is the holder's still
    worker = make_worker(threads=2)
    gate.set()
    drain(stub_broker, worker)
    assert runs == [1, 1]
    assert job.send(1).message_id != held.message_id  # released by the holder's success


def test_once_key_none_with_a_companion_is_refused(stub_broker: StubBroker) -> None:
    @dramatiq.actor(once_key="k-{x}")
    def job(x: int) -> None: ...

    with pytest.raises(CachifyTaskOptionError, match=r"task 'job': once_ttl given without once_key"):
        job.send_with_options(args=(1,), once_key=None, once_ttl=5)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"once_kye": "x"}, r"task 'job': unknown option\(s\) once_kye"),
        ({"once_ttl": -5}, r"task 'job': once_ttl must be a positive number"),
        ({"once_mode": "bogus"}, r"task 'job': once_mode must be"),
        ({"once_raise": "yes"}, r"task 'job': once_raise must be a bool"),
        ({"pool_key": "p"}, r"task 'job': pool_max_size must be an int >= 1"),
        (
            {"pool_key": "p", "pool_max_size": 1, "pool_on_full": len},
            r"task 'job': a per-message pool_on_full",
        ),
        ({"cache_key": "c-{x}", "cache_ttl": "soon"}, r"task 'job': cache_ttl must be a positive"),
        ({"cache_key": "c-{y}"}, r"task 'job': cache_key: .*y"),
        ({"cache_key": "c-{x}", "cache_on_backend_error": "maybe"}, r"task 'job': cache_on_backend_error"),
    ],
)
def test_bad_overrides_raise_at_send_and_send_nothing(
    stub_broker: StubBroker, overrides: dict[str, Any], match: str
) -> None:
    @dramatiq.actor(once_key="k-{x}")
    def job(x: int) -> None: ...

    @dramatiq.actor
    def plain(x: int) -> None: ...

    # An actor declared without options validates them too (its once_key given per message).
    for actor, given in ((job, overrides), (plain, {"once_key": "p-{x}", **overrides})):
        with pytest.raises(
            CachifyMessageOptionError, match=match.replace("'job'", f"'{actor.actor_name}'")
        ) as info:
            actor.send_with_options(args=(1,), **given)
        assert isinstance(info.value, CachifyTaskOptionError)
        assert isinstance(info.value, MiddlewareError)  # so Dramatiq lets it reach the caller
    assert stub_broker.queues["default"].qsize() == 0
    first = job.send(1)  # the refused sends left no hold behind
    assert job.send_with_options(args=(1,), once_ttl=5).message_id == first.message_id
