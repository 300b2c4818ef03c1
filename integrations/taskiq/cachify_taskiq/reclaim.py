"""A dead worker's deliveries come back on ``RedisStreamBroker`` without waiting for new traffic.

A delivery read from the stream stays in the consumer group's pending list until it is
acknowledged. taskiq-redis's ``listen`` claims entries idle longer than ``idle_timeout``
(``XAUTOCLAIM``) only after a read that returned new messages, so what a killed worker was
running, prefetching or holding for a requeue waits for unrelated traffic, possibly forever,
and with it the dedup hold (``once_key``) of each of those tasks.

Here the wrapped ``listen`` (:mod:`.broker_hooks`) of each worker process reclaims them itself:
every ``min(idle_timeout / 2, 5 s)`` (a **tick**, the first at once), while the receiver asks
for its next message, it claims entries idle longer than ``idle_timeout`` from the broker's
stream and its ``additional_streams`` to this worker's consumer name, one ``XAUTOCLAIM
COUNT 1`` per message handed to the receiver, at most ``unacknowledged_batch_size`` claims per
tick. Each is yielded like a message the broker read, with an ack that is ``XACK`` on its
stream and group. So a killed worker's deliveries run again within about ``idle_timeout`` +
one tick of their last delivery.

- Claiming one at a time, only when the receiver has room for a message, keeps a claimed
  entry from waiting in this process: a saturated worker claims nothing, another one does.
- Two workers cannot both take an entry: ``XAUTOCLAIM`` is atomic and resets the entry's idle
  time, so the other's claim no longer matches it (taskiq-redis's own claim after a read
  included).
- A live worker's run that lasts longer than ``idle_timeout`` is claimed by another worker
  too — that is the meaning of ``idle_timeout`` in taskiq-redis, which now applies reliably
  instead of at the next message: keep it above the longest run.
- Only ``RedisStreamBroker`` and its subclasses; any other broker's ``listen`` is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from taskiq.abc.broker import AsyncBroker
from taskiq.acks import AckableMessage

__all__ = ["MAX_TICK_S", "Reclaimer", "reclaimer_for", "with_reclaims"]

logger = logging.getLogger("cachify.taskiq")

#: The longest time between two ticks; shorter (``idle_timeout / 2``) for a short idle timeout.
MAX_TICK_S = 5.0
#: The cursor from which ``XAUTOCLAIM`` scans a pending list, and returns when it has scanned all.
START = "0-0"
#: How many claimed ids one tick's log line names.
LOGGED_IDS = 10


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class Reclaimer:
    """The reclaims of one ``RedisStreamBroker`` in one worker process."""

    broker: Any  #: a ``taskiq_redis.RedisStreamBroker``
    #: Seconds between two ticks.
    tick_s: float
    #: At most this many claims per tick.
    batch: int
    #: Where each stream's scan of its pending list goes on at the next call.
    cursors: dict[str, str] = field(default_factory=dict)

    @property
    def idle_ms(self) -> int:
        return int(self.broker.idle_timeout)

    def streams(self) -> list[str]:
        return [
            self.broker.queue_name,
            *(s for s in self.broker.additional_streams if s != self.broker.queue_name),
        ]

    def tick(self) -> Tick:
        return Tick(self, self.streams())

    async def claim_one(self, stream: str) -> list[tuple[bytes | str, Any]]:
        """``XAUTOCLAIM`` at most one entry of ``stream`` idle over ``idle_timeout`` to this
        worker; ``[]`` when none was found from the cursor on (the cursor moves on)."""
        async with Redis(connection_pool=self.broker.connection_pool) as conn:
            reply = await conn.xautoclaim(
                stream,
                self.broker.consumer_group_name,
                self.broker.consumer_name,
                min_idle_time=self.idle_ms,
                start_id=self.cursors.get(stream, START),
                count=1,
            )
        cursor, entries = _text(reply[0]), reply[1]
        self.cursors[stream] = cursor
        return list(entries)

    def message(self, stream: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> AckableMessage:
        """A claimed entry as the broker's ``listen`` yields one: acknowledged by ``XACK``."""
        broker = self.broker

        async def ack() -> None:
            async with Redis(connection_pool=broker.connection_pool) as conn:
                await conn.xack(stream, broker.consumer_group_name, entry_id)

        return AckableMessage(data=fields[b"data"], ack=ack)

    async def drop(self, stream: str, entry_id: bytes | str) -> None:
        """Acknowledge a pending entry that has no message (deleted or trimmed from the stream)."""
        async with Redis(connection_pool=self.broker.connection_pool) as conn:
            await conn.xack(stream, self.broker.consumer_group_name, entry_id)


@dataclass
class Tick:
    """One tick's claims: :meth:`next` gives the next one, ``None`` when the tick is over."""

    reclaimer: Reclaimer
    #: The streams still to scan; each until its cursor comes back to the start.
    streams: list[str]
    claimed: list[str] = field(default_factory=list)
    calls: int = 0

    async def next(self) -> AckableMessage | None:
        r = self.reclaimer
        while self.streams and self.calls < r.batch:
            stream = self.streams[0]
            self.calls += 1
            try:
                entries = await r.claim_one(stream)
                if r.cursors[stream] == START:
                    self.streams.pop(0)
                for entry_id, fields in entries:
                    if not fields or b"data" not in fields:
                        await r.drop(stream, entry_id)
                        continue
                    self.claimed.append(f"{stream}:{_text(entry_id)}")
                    return r.message(stream, entry_id, fields)
            except Exception as exc:
                logger.warning(
                    "cachify: reclaiming idle deliveries of stream %s failed (%s); next try in %.1fs",
                    stream,
                    exc,
                    r.tick_s,
                )
                self.streams.clear()
        self.streams.clear()
        self.report()
        return None

    def report(self) -> None:
        if not self.claimed:
            return
        r, shown = self.reclaimer, self.claimed[:LOGGED_IDS]
        more = len(self.claimed) - len(shown)
        logger.info(
            "cachify: reclaimed %d delivery(ies) idle over %d ms (group %s) for consumer %s: %s%s",
            len(self.claimed),
            r.idle_ms,
            r.broker.consumer_group_name,
            r.broker.consumer_name,
            ", ".join(shown),
            f" and {more} more" if more else "",
        )
        self.claimed = []


def reclaimer_for(broker: AsyncBroker) -> Reclaimer | None:
    """The reclaimer of ``broker`` if it is a ``RedisStreamBroker``, else ``None``."""
    try:
        from taskiq_redis import RedisStreamBroker
    except ImportError:  # pragma: no cover - taskiq-redis comes with the taskiq extra
        return None
    if not isinstance(broker, RedisStreamBroker):
        return None
    idle_ms = broker.idle_timeout
    if not isinstance(idle_ms, int) or isinstance(idle_ms, bool) or idle_ms <= 0:
        raise ValueError(
            f"cachify: RedisStreamBroker(idle_timeout={idle_ms!r}): idle_timeout must be a positive "
            "int of milliseconds (how long a delivery stays unacknowledged before another worker "
            "claims it), e.g. idle_timeout=600000"
        )
    tick_s = min(idle_ms / 2000, MAX_TICK_S)
    return Reclaimer(broker, tick_s, max(1, int(broker.unacknowledged_batch_size)))


async def with_reclaims(
    deliveries: AsyncIterator[bytes | AckableMessage],
    reclaimer: Reclaimer,
    clock: Callable[[], float],
) -> AsyncGenerator[bytes | AckableMessage, None]:
    """``deliveries`` (the broker's ``listen``) merged with ``reclaimer``'s claims.

    At most one read of ``deliveries`` is in flight; a message it returns while a tick is
    claiming waits for the next call. ``clock`` is the event loop's ``time``.
    """
    reading: asyncio.Future[bytes | AckableMessage] | None = None
    tick: Tick | None = reclaimer.tick()
    next_tick_at = clock()
    try:
        while True:
            if tick is not None:
                claimed = await tick.next()
                if claimed is not None:
                    yield claimed
                    continue
                tick, next_tick_at = None, clock() + reclaimer.tick_s
            if reading is None:
                reading = asyncio.ensure_future(anext(deliveries))
            done, _ = await asyncio.wait({reading}, timeout=max(0.0, next_tick_at - clock()))
            if reading in done:
                read, reading = reading, None
                try:
                    message = read.result()
                except StopAsyncIteration:
                    return
                yield message
            if clock() >= next_tick_at:
                tick = reclaimer.tick()
    finally:
        if reading is not None:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # it ends with this generator
                await reading
        close = getattr(deliveries, "aclose", None)
        if close is not None:
            await close()
