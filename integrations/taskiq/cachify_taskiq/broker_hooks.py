"""The two broker methods :class:`~.hooks.CachifyMiddleware` wraps on the broker it is added
to, because Taskiq's middleware hooks cannot do these things:

- ``kick``: a duplicate must not be published, yet ``kiq`` must return the holder's handle.
  ``pre_send`` can only change the message, and ``kiq`` always kicks it, so ``pre_send``
  marks the message (:data:`~.envelope.DUPLICATE_LABEL`) and the wrapped ``kick`` skips it. It
  also gives a dedup hold back when the publish fails (``kiq`` then raises ``SendTaskError``;
  ``post_send`` never runs).
- ``listen``: a requeue must be published before its delivery is acknowledged, and the ack
  happens after the last hook. The wrapped ``listen`` hands the receiver an ack that asks the
  middleware first (:mod:`.requeue`). On ``RedisStreamBroker`` it also yields the deliveries
  it reclaims from dead workers (:mod:`.reclaim`), with the same ack.

Both wrappers are instance attributes of that broker only, and installed once per broker.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Protocol

from taskiq.abc.broker import AsyncBroker
from taskiq.acks import AckableMessage
from taskiq.message import BrokerMessage

from . import reclaim

__all__ = ["Ack", "BrokerHooks", "install"]

Ack = Callable[[], Awaitable[None] | None]


class BrokerHooks(Protocol):
    def before_kick(self, message: BrokerMessage) -> bool:
        """Whether ``message`` is to be published at all."""
        ...

    async def after_kick(self, message: BrokerMessage, error: Exception | None) -> None:
        """The broker took ``message`` (``error`` is ``None``) or refused it."""
        ...

    async def acknowledge(self, ack: Ack) -> None:
        """Acknowledge a delivery now with ``ack``, or keep ``ack`` for later."""
        ...


_installed: weakref.WeakSet[AsyncBroker] = weakref.WeakSet()


def install(broker: AsyncBroker, hooks: BrokerHooks) -> None:
    if broker in _installed:
        return
    _installed.add(broker)
    kick = broker.kick
    listen = broker.listen

    @functools.wraps(kick)
    async def cachify_kick(message: BrokerMessage) -> None:
        if not hooks.before_kick(message):
            return
        try:
            await kick(message)
        except Exception as exc:
            await hooks.after_kick(message, exc)
            raise
        await hooks.after_kick(message, None)

    @functools.wraps(listen)
    async def cachify_listen() -> AsyncGenerator[bytes | AckableMessage, None]:
        deliveries: AsyncIterator[bytes | AckableMessage] = listen()
        reclaimer = reclaim.reclaimer_for(broker)
        if reclaimer is not None:
            deliveries = reclaim.with_reclaims(deliveries, reclaimer, asyncio.get_running_loop().time)
        try:
            async for delivery in deliveries:
                if isinstance(delivery, AckableMessage):
                    delivery = AckableMessage(
                        data=delivery.data, ack=functools.partial(hooks.acknowledge, delivery.ack)
                    )
                yield delivery
        finally:
            close = getattr(deliveries, "aclose", None)
            if close is not None:
                await close()

    # Instance attributes shadow the class's methods for this broker only.
    setattr(broker, "kick", cachify_kick)  # noqa: B010
    setattr(broker, "listen", cachify_listen)  # noqa: B010
