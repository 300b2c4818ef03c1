"""Hand-overs of a pool's waiting room, as the integrations publish them — written once.

A delivery that finds its pool full is parked with a **payload**: what its integration needs
to publish it again (same task id, same queue and routing, retries untouched, ``requeues + 1``).
Every release of a slot hands the slot to the oldest parked delivery and returns its payload;
so does the waiting room's sweep for a hand-over whose publish was lost. Whoever receives a
hand-over publishes it at once, carrying the entry id as the copy's reservation
(:data:`~.envelope.RESERVATION_FIELD`).

Payloads are framed with the framework that parked them (``b"<framework>\\n" + body``), so a
worker of one framework sharing a store and prefix with another's never tries to publish the
other's messages: it leaves them, and their own sweeper publishes them after the lease.

* :func:`payload` / :func:`publish_all` / :func:`apublish_all`: frame a body; publish a batch
  of hand-overs one by one, each failure logged and left to the sweep;
* :func:`start_worker_sweeper` / :func:`start_async_worker_sweeper`: the per-process sweep of a
  worker (idempotent per process and instance; nothing on a store without waiting rooms); each
  tick first makes the releases this process's finishes owe (:mod:`.owed`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence

from .. import rooms
from ..backends.base import Handover
from ..errors import CachifyBackendError
from ..instance import Cachify
from ..leases import Periodic
from ..steps import Steps
from . import owed

__all__ = [
    "PublishOne",
    "apublish_all",
    "payload",
    "publish_all",
    "start_async_worker_sweeper",
    "start_worker_sweeper",
    "stop_worker_sweepers",
]

logger = logging.getLogger("cachify.tasks")

#: Publishes one hand-over: ``(entry_id, body)``; the copy carries ``entry_id`` as its reservation.
PublishOne = Callable[[str, bytes], None]
APublishOne = Callable[[str, bytes], Awaitable[None]]


def payload(framework: str, body: bytes) -> bytes:
    """The waiting-room payload of ``body`` (a message as ``framework`` encodes it)."""
    return framework.encode() + b"\n" + body


def _bodies(framework: str, handed: Iterable[Handover], newest_first: bool) -> list[tuple[str, bytes]]:
    mine: list[tuple[str, bytes]] = []
    tag = framework.encode() + b"\n"
    for h in handed:
        if h.payload.startswith(tag):
            mine.append((h.entry_id, h.payload[len(tag) :]))
        else:
            logger.warning(
                "cachify: hand-over %s is not a %s message (%r...): left for its own workers' sweep",
                h.entry_id,
                framework,
                h.payload[:20],
            )
    return mine[::-1] if newest_first else mine


def publish_all(
    framework: str, handed: Sequence[Handover], publish_one: PublishOne, newest_first: bool = False
) -> int:
    """Publish each of ``framework``'s hand-overs; how many went out. A failed publish is
    logged: the waiting room publishes that entry again after its lease. ``newest_first``: for
    a publish that puts each message where the next consumer takes it (a stack's top), so the
    oldest, published last, is taken first."""
    sent = 0
    for entry_id, body in _bodies(framework, handed, newest_first):
        try:
            publish_one(entry_id, body)
        except Exception as exc:
            logger.error("cachify: hand-over %s not published (the sweep retries it): %s", entry_id, exc)
        else:
            logger.debug("cachify: hand-over %s published", entry_id)
            sent += 1
    return sent


async def apublish_all(
    framework: str, handed: Sequence[Handover], publish_one: APublishOne, newest_first: bool = False
) -> int:
    """The asyncio twin of :func:`publish_all`."""
    sent = 0
    for entry_id, body in _bodies(framework, handed, newest_first):
        try:
            await publish_one(entry_id, body)
        except Exception as exc:
            logger.error("cachify: hand-over %s not published (the sweep retries it): %s", entry_id, exc)
        else:
            logger.debug("cachify: hand-over %s published", entry_id)
            sent += 1
    return sent


def _settle(c: Cachify) -> rooms.First:
    """Each sweep tick first makes the releases ``c``'s finishes owe (:mod:`.owed`): a slot a
    store outage kept from being given back frees within a tick of the store's return, even
    if no delivery comes to this process meanwhile. If they cannot be made yet (on Redis
    Cluster, one node down), they stay owed and the tick sweeps the rooms all the same."""

    def steps() -> Steps[tuple[Handover, ...]]:
        try:
            return (yield from owed.settle_steps(c))
        except CachifyBackendError as exc:  # kept for the next tick; the rooms are swept now
            logger.warning("cachify: owed releases not made yet (kept for the next try): %s", exc)
            return ()

    return steps


#: The sweepers this process runs: (pid, id of the instance) -> the periodic tick.
_sweepers: dict[tuple[int, int], Periodic] = {}


def _started(c: Cachify, supported: bool) -> tuple[tuple[int, int], bool]:
    key = (os.getpid(), id(c))
    return key, key in _sweepers or not supported


def start_worker_sweeper(
    c: Cachify,
    framework: str,
    publish_one: PublishOne,
    interval_s: float = rooms.DEFAULT_SWEEP_INTERVAL_S,
    newest_first: bool = False,
) -> Periodic | None:
    """Sweep ``c``'s waiting rooms from this worker process (once per process and instance):
    slots freed by expiry and lost hand-overs move the queue within ``interval_s``. Costs one
    read per tick while nothing waits. ``None`` when the store has no waiting rooms.
    ``newest_first``: as for :func:`publish_all`."""
    key, skip = _started(c, c.sync_backend.supports_waiting_room)
    if skip:
        return _sweepers.get(key)
    periodic = rooms.start_sweeper(
        c,
        lambda handed: publish_all(framework, handed, publish_one, newest_first),
        interval_s,
        first=_settle(c),
    )
    _sweepers[key] = periodic
    return periodic


def start_async_worker_sweeper(
    c: Cachify, framework: str, publish_one: APublishOne, interval_s: float = rooms.DEFAULT_SWEEP_INTERVAL_S
) -> Periodic | None:
    """The asyncio twin of :func:`start_worker_sweeper`: a task on the running loop."""
    key, skip = _started(c, c.async_backend.supports_waiting_room)
    if skip:
        return _sweepers.get(key)

    async def publish(handed: list[Handover]) -> None:
        await apublish_all(framework, handed, publish_one)

    periodic = rooms.start_async_sweeper(c, publish, interval_s, first=_settle(c))
    _sweepers[key] = periodic
    return periodic


def stop_worker_sweepers() -> None:
    """Stop this process's sweepers (a worker shutting down; tests)."""
    pid = os.getpid()
    for key in [k for k in _sweepers if k[0] == pid]:
        _sweepers.pop(key).stop()
