"""Where a delivery's events run: blocking on the worker thread for a sync actor; for an
``async def`` actor, the asyncio twins on dramatiq's event loop thread (the one the ``AsyncIO``
middleware starts), so the leases they begin are renewed by tasks on that loop."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from dramatiq.asyncio import get_event_loop_thread, set_event_loop_thread

from .declaration import DeclaredActor
from .errors import CachifySetupError

__all__ = ["drive", "on_loop", "stop_early"]

T = TypeVar("T")


def on_loop(actor: DeclaredActor, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on dramatiq's event loop thread and wait for it (worker thread)."""
    loop_thread = get_event_loop_thread()
    if loop_thread is None:
        coroutine.close()
        raise CachifySetupError(
            f"actor {actor.name!r} is async but no event loop thread is running: "
            "add dramatiq.middleware.AsyncIO() to the broker"
        )
    return loop_thread.run_coroutine(coroutine)


def drive(
    actor: DeclaredActor, blocking: Callable[[], T], asyncio: Callable[[], Coroutine[Any, Any, T]]
) -> T:
    """One delivery event: ``blocking()`` for a sync actor, ``asyncio()`` on the loop otherwise."""
    return on_loop(actor, asyncio()) if actor.is_async else blocking()


def stop_early() -> None:
    """Stop the loop thread an ``AsyncIO`` middleware ahead of cachify's started in
    ``before_worker_boot``, when cachify then refuses the boot: the worker never runs, and the
    thread (not a daemon) would keep the ``dramatiq`` worker process from exiting."""
    loop_thread = get_event_loop_thread()
    if loop_thread is not None:
        loop_thread.stop()  # type: ignore[no-untyped-call]
        set_event_loop_thread(None)
