"""Small helpers the contract rows share."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..support import Worker, started
from .frameworks import Framework
from .probe import WAIT_S, Probe


def send_first(framework: Framework, probe: Probe, task: Any, x: int) -> tuple[Worker, str]:
    """Send ``task(x)`` from a thread of its own (an eager send runs the body, which may be
    gated) and return (that thread, the id of the task now holding ``x``'s key): the handle's
    id once the send returns, or the id the body saw if it runs first (eager)."""
    before = len(probe.entries)
    sending = started(lambda: framework.send(task, x))
    deadline = time.monotonic() + WAIT_S
    while sending.is_alive() and len(probe.entries) == before:
        assert time.monotonic() < deadline, "the first send neither returned nor ran"
        time.sleep(0.005)
    if not sending.is_alive():
        return sending, framework.handle_id(sending.finish())
    return sending, probe.entries[before].task_id


@contextlib.contextmanager
def pool_held(c: Any, key: str, max_size: int = 1) -> Iterator[None]:
    """Every slot of pool ``key`` taken by the test itself until the block ends."""
    with contextlib.ExitStack() as stack:
        for _ in range(max_size):
            stack.enter_context(c.pool(key, max_size=max_size))
        yield


def in_thread(fn: Callable[[], Any], timeout_s: float) -> Any:
    """``fn()`` in a daemon thread; its result or exception — or AssertionError if it has not
    returned within ``timeout_s`` (a hang fails the test instead of blocking it)."""
    worker = Worker(fn)
    worker.start()
    worker.join(timeout_s)
    assert not worker.is_alive(), f"did not return within {timeout_s}s (hangs)"
    return worker.finish(0)


def hold_until(c: Any, key: str, done: Callable[[], bool], timeout_s: float = WAIT_S) -> threading.Thread:
    """A thread holding pool ``key`` (1 slot) until ``done()`` (bounded); started when returned
    and holding."""
    holding = threading.Event()

    def hold() -> None:
        with c.pool(key, max_size=1):
            holding.set()
            deadline = time.monotonic() + timeout_s
            while not done() and time.monotonic() < deadline:
                time.sleep(0.005)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert holding.wait(WAIT_S)
    return thread
