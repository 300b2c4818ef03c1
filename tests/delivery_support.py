"""What the waiting-room and rate tests of the delivery lifecycle share: the blocking/asyncio
``event`` caller, a stand-in for an integration (:class:`Broker`: it publishes hand-overs into
a list and delivers them back as copies carrying their reservation), and the bookkeeping that
ends every delivery a test left running, so no lease of its goes on renewing into later tests."""

from __future__ import annotations

import contextlib
import inspect
import json
import time
from collections.abc import Sequence
from typing import Any

from cachify_core import Cachify, rooms
from cachify_core.backends.base import Handover
from cachify_core.tasks import Delivery, State, TaskPolicy

#: Deliveries of the running test (see :func:`end_runs`).
LIVE: list[Delivery] = []


def live(delivery: Delivery) -> Delivery:
    LIVE.append(delivery)
    return delivery


def end_runs() -> None:
    """End the deliveries a test left running (tests/conftest.py does it after each test)."""
    while LIVE:
        d = LIVE.pop()
        if d.state in (State.RUNNING, State.RAISED):
            with contextlib.suppress(Exception):
                d.ended()


async def event(delivery: Delivery, kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the blocking event ``name`` (``kind == "sync"``) or its ``a``-prefixed twin."""
    if kind == "sync":
        return getattr(delivery, name)(*args, **kwargs)
    result = getattr(delivery, "a" + name)(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


class Broker:
    """Stands for the integration: what it published, as (entry id, message) pairs; a message
    is ``{"id": task id, "args": [...]}``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def publish(self, handed: Sequence[Handover]) -> None:
        for h in handed:
            self.sent.append((h.entry_id, json.loads(h.payload)))

    def delivery(self, p: TaskPolicy, task_id: str, *args: Any, reservation: str | None = None) -> Delivery:
        body = json.dumps({"id": task_id, "args": list(args)}).encode()
        return live(
            Delivery(
                p, task_id, args, {}, reservation=reservation, payload=lambda: body, publish=self.publish
            )
        )

    def copy(self, p: TaskPolicy, entry_id: str, message: dict[str, Any]) -> Delivery:
        """The delivery of a published hand-over (or of a duplicate publish of one)."""
        return self.delivery(p, message["id"], *message["args"], reservation=entry_id)

    def redeliver(self, p: TaskPolicy) -> Delivery:
        """The oldest published hand-over, as the broker delivers it."""
        entry_id, message = self.sent.pop(0)
        return self.copy(p, entry_id, message)

    def sweep(self, c: Cachify) -> None:
        self.publish(rooms.sweep(c))

    def wait_for(self, c: Cachify, count: int, within_s: float) -> float:
        """Sweep until ``count`` hand-overs came (bounded); how long it took."""
        began = time.monotonic()
        while len(self.sent) < count:
            assert time.monotonic() - began < within_s, f"{len(self.sent)} of {count} hand-overs"
            self.sweep(c)
            time.sleep(0.01)
        return time.monotonic() - began
