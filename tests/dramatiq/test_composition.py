"""Groups and pipelines: an enqueue that does not come through ``actor.send`` has no handle to
return, and other work waits for it, so a duplicate raises ``CachifyDuplicateError`` at
``run()`` instead of silently leaving a member out."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from cachify_dramatiq import CachifyDuplicateError, CachifyDuplicateMessage


def test_a_duplicate_in_a_group_raises_at_run(stub_broker: StubBroker) -> None:
    @dramatiq.actor(once_key="k-{x}")
    def job(x: int) -> None: ...

    held = job.send(1)
    with pytest.raises(CachifyDuplicateError) as info:
        dramatiq.group([job.message(2), job.message(1)]).run()
    assert info.value.holder_id == held.message_id
    assert isinstance(info.value, CachifyDuplicateMessage)
    assert stub_broker.queues["default"].qsize() == 2  # the holder and member 2


def test_a_duplicate_pipeline_step_raises_at_run(stub_broker: StubBroker) -> None:
    @dramatiq.actor(once_key="k-{x}")
    def job(x: int) -> int:
        return x

    @dramatiq.actor
    def after(x: int) -> None: ...

    held = job.send(1)
    with pytest.raises(CachifyDuplicateError) as info:
        (job.message(1) | after.message()).run()
    assert info.value.holder_id == held.message_id
    assert stub_broker.queues["default"].qsize() == 1


def test_once_raise_is_not_needed_for_a_plain_enqueue_but_send_still_returns_the_holder(
    stub_broker: StubBroker,
) -> None:
    @dramatiq.actor(once_key="k-{x}")
    def job(x: int) -> None: ...

    held = job.send(1)
    assert job.send(1).message_id == held.message_id
    with pytest.raises(CachifyDuplicateError):
        stub_broker.enqueue(job.message(1))
    assert job.send(1).message_id == held.message_id  # the raise changed nothing
