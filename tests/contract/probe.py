"""What the contract's task bodies report: every entry (argument, task id, attempt), how many run
at once and at most, and gates a body waits on. Thread-safe: bodies run in worker threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, NoReturn

#: Upper bound of every wait in the contract suite, in seconds.
WAIT_S = 10.0


@dataclass(frozen=True)
class Ctx:
    """What a body knows about its delivery, through the framework's own API."""

    task_id: str
    attempt: int  #: 0 for the first run; the framework's retry count after that
    retry: Callable[[], NoReturn]  #: ask the framework to retry this task (raises)


@dataclass(frozen=True)
class Entry:
    x: int
    task_id: str
    attempt: int
    at: float = field(default_factory=time.monotonic)  #: when the body was entered


#: Every probe of the running test, so its teardown can open their gates (a failed assertion
#: must not leave a body waiting, nor the driver's shutdown waiting for it).
LIVE: list[Probe] = []


def release_all() -> None:
    for probe in LIVE:
        probe.release()
    LIVE.clear()


class Probe:
    """Records what bodies made by :meth:`body` do."""

    def __init__(self) -> None:
        LIVE.append(self)
        self._cond = threading.Condition()
        self.entries: list[Entry] = []
        self.completed: list[Entry] = []
        self.active = 0
        self.peak = 0
        self._gates: dict[int, threading.Event] = {}

    # -- gates --------------------------------------------------------------------------------
    def block(self, *xs: int) -> None:
        """Bodies for these arguments wait (bounded) until :meth:`release`."""
        for x in xs:
            self._gates.setdefault(x, threading.Event())

    def release(self, *xs: int) -> None:
        for x in xs or list(self._gates):
            self._gates.setdefault(x, threading.Event()).set()

    # -- waiting ------------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[Probe], bool], what: str, timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                assert left > 0, f"not within {timeout_s}s: {what} (entries: {self.entries})"
                self._cond.wait(min(left, 0.05))

    def wait_entered(self, count: int = 1, timeout_s: float = WAIT_S) -> None:
        self.wait_for(lambda p: len(p.entries) >= count, f"{count} body entries", timeout_s)

    # -- reading ------------------------------------------------------------------------------
    def runs_of(self, x: int) -> list[Entry]:
        with self._cond:
            return [e for e in self.entries if e.x == x]

    @property
    def xs(self) -> list[int]:
        with self._cond:
            return [e.x for e in self.entries]

    # -- the body -----------------------------------------------------------------------------
    def body(
        self,
        *,
        result: Callable[[int], Any] = lambda x: f"value-{x}",
        fail_first: int = 0,
        retry_first: int = 0,
        inside: Callable[[], AbstractContextManager[Any]] | None = None,
        sleep_s: float = 0.0,
        before_retry: Callable[[Ctx], None] | None = None,
        retry_only: int | None = None,
    ) -> Callable[[Ctx, int], Any]:
        """A task body ``body(ctx, x)``: records its entry, waits at its gate if ``x`` is
        blocked, optionally enters ``inside()`` (e.g. a stacked pool), sleeps ``sleep_s``, then:
        the first ``fail_first`` entries raise ``RuntimeError``; attempts below ``retry_first``
        ask the framework for a retry (after ``before_retry(ctx)``; only for ``x == retry_only`` if
        given); else returns ``result(x)``."""
        failures = iter(range(fail_first))

        def run(ctx: Ctx, x: int) -> Any:
            entry = Entry(x, ctx.task_id, ctx.attempt)
            with self._cond:
                self.entries.append(entry)
                self.active += 1
                self.peak = max(self.peak, self.active)
                fail = next(failures, None) is not None
                self._cond.notify_all()
            try:
                gate = self._gates.get(x)
                if gate is not None:
                    assert gate.wait(WAIT_S), f"body for {x} was never released"
                if inside is not None:
                    with inside():
                        time.sleep(sleep_s)
                else:
                    time.sleep(sleep_s)
                if fail:
                    raise RuntimeError(f"planned failure of {x}")
                if ctx.attempt < retry_first and retry_only in (None, x):
                    if before_retry is not None:
                        before_retry(ctx)
                    ctx.retry()
                value = result(x)
            finally:
                with self._cond:
                    self.active -= 1
                    self._cond.notify_all()
            with self._cond:
                self.completed.append(entry)
                self._cond.notify_all()
            return value

        return run


def ids(entries: Iterable[Entry]) -> list[str]:
    return [e.task_id for e in entries]
