"""``actor.send_with_options``, wrapped (``actor.send`` calls it): a duplicate send returns the
holder's handle instead of raising (unless ``once_raise``), and a hold taken for a message whose
publish then failed is given back. Enqueues that do not come through here (pipelines, groups,
``broker.enqueue``) have no handle to return: their duplicates raise.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from dramatiq.actor import Actor
from dramatiq.message import Message

from cachify_core.tasks import logs

from .errors import CachifyDuplicateMessage
from .thread_state import ThreadState

__all__ = ["wrap_send"]


def wrap_send(actor: Actor[Any, Any], thread: ThreadState) -> None:
    original = actor.send_with_options

    @functools.wraps(original)
    def send_with_options(
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        delay: timedelta | int | None = None,
        **options: Any,
    ) -> Message[Any]:
        thread.pending, thread.sending = None, True
        try:
            return original(args=args, kwargs=kwargs, delay=delay, **options)
        except CachifyDuplicateMessage as duplicate:
            if duplicate.once_raise:
                raise
            return duplicate.holder
        except BaseException:
            pending = thread.pending
            if pending is not None:  # claimed, then the publish failed: give the hold back
                try:
                    pending.policy.unclaim(pending.message_id, pending.claim)
                except Exception as exc:
                    logs.logger.error(
                        "cachify: task %s[%s] not sent; giving back its claim failed: %s",
                        actor.actor_name,
                        pending.message_id,
                        exc,
                    )
            raise
        finally:
            thread.pending, thread.sending = None, False

    # An instance attribute: ``actor.send()`` calls ``self.send_with_options`` and finds it.
    actor.send_with_options = send_with_options  # type: ignore[method-assign]
