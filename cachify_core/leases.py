"""Lease renewal (``auto_renew=True``): keep a lock or pool slot alive while its holder runs.

A held lease is renewed every third of its TTL: for blocking holders one daemon thread per
process schedules renewals and a few worker threads make them (so one stalled call delays no
other lease); for async holders each event loop keeps a heap and one timer, and each due
renewal runs as a task of its own. Renewal stops when the
holder releases, and dies with the process, so a crashed holder's lease ends within one TTL.
A renewal that finds the lease gone (expired, or force-released) logs a warning and stops (the
holder can check ``owned()``); a renewal that fails on a backend error is retried within a
second, so a short outage does not cost the lease.

The same thread runs periodic jobs (``renewer.every``; asyncio: ``every_async``), such as the
waiting rooms' sweep (:func:`cachify_core.rooms.start_sweeper`): one more entry in its heap,
run on the same worker threads, so it costs no thread of its own. Like leases, periodic jobs
do not survive ``fork()``: a child starts its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .backends import AsyncBackend, SyncBackend
from .metrics import events

if TYPE_CHECKING:
    from .instance import Cachify

__all__ = ["Lease", "Periodic", "Renewer", "begin", "end", "every_async", "renewer", "start_async_renewal"]

logger = logging.getLogger("cachify")

Kind = Literal["lock", "pool"]

_now = time.monotonic

#: Renewals in flight at once: enough that a few stalled calls leave the others on time.
RENEWAL_THREADS = 4


class Lease:
    """One renewed hold. ``stop()`` ends its renewal (idempotent, no I/O)."""

    __slots__ = (
        "_loop",
        "_on_stop",
        "_renewing",
        "_task",
        "backend",
        "key",
        "kind",
        "lost",
        "stopped",
        "token",
        "ttl_ms",
    )

    def __init__(
        self, backend: SyncBackend | AsyncBackend, kind: Kind, key: str, token: str, ttl_ms: int
    ) -> None:
        self.backend = backend
        self.kind = kind
        self.key = key
        self.token = token
        self.ttl_ms = ttl_ms
        self.stopped = False
        self.lost = False
        self._task: asyncio.Task[None] | None = None
        self._on_stop: Callable[[], None] | None = None
        #: The event loop an async lease is renewed on (``None``: the renewal thread's).
        self._loop: asyncio.AbstractEventLoop | None = None
        # Held around a blocking renewal, and by stop(): once stop() returns no renewal is in
        # flight, so a renewal cannot re-set a lock the holder has just released.
        self._renewing = threading.Lock()

    @property
    def interval_s(self) -> float:
        return self.ttl_ms / 3000.0

    def stop(self) -> None:
        """From any thread. An async lease's bookkeeping (its heap, its task) belongs to its
        loop: from another thread (a sync release of a hold an async caller took, say) it is
        handed to that loop; the flag that ends its renewals is set at once."""
        if self.stopped:
            return
        with self._renewing:
            self.stopped = True
        loop = self._loop
        if loop is not None and _running_loop() is not loop:
            with contextlib.suppress(RuntimeError):  # its loop has closed: nothing of it runs now
                loop.call_soon_threadsafe(self._stopped_here)
            return
        self._stopped_here()

    def _stopped_here(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._on_stop is not None:
            self._on_stop()

    def next_delay_s(self, failed: bool) -> float:
        """Seconds to the next renewal: a third of the TTL, or within a second after a failure
        (a short outage must not cost the lease)."""
        return min(self.interval_s, 1.0) if failed else self.interval_s

    def _lost(self) -> None:
        self.lost = True
        if events.sink is not None:  # counted as expired (once per hold; see cachify_core.metrics)
            events.sink.lost(self.kind, self.token)
        logger.warning(
            "cachify: %s %s was lost before its holder released it; renewal stopped", self.kind, self.key
        )


class Periodic:
    """A job run every ``interval_s`` until ``stop()`` (idempotent, no I/O). A run that raises
    is logged and the job goes on; runs never overlap (the next is scheduled after one ends).

    Sooner when asked: a job that returns a number of seconds runs again within that (if less
    than ``interval_s``), and :meth:`run_within` brings the next run forward from outside (a
    timed entry just parked, due before the next tick)."""

    __slots__ = ("_task", "_wake", "interval_s", "job", "name", "next_at", "stopped", "wanted_at")

    def __init__(self, name: str, interval_s: float, job: Callable[[], object]) -> None:
        if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) or not interval_s > 0:
            raise ValueError(
                f"periodic job {name!r}: interval_s must be a positive number, got {interval_s!r}"
            )
        self.name = name
        self.interval_s = float(interval_s)
        self.job = job
        self.stopped = False
        self._task: asyncio.Task[None] | None = None
        #: When the next run is scheduled (monotonic s; ``inf`` while one runs).
        self.next_at = math.inf
        #: The soonest run asked for while one was running (monotonic s).
        self.wanted_at = math.inf
        #: How its scheduler is told of a sooner run (set by the scheduler).
        self._wake: Callable[[float], None] | None = None

    def stop(self) -> None:
        self.stopped = True
        if self._task is not None:
            self._task.cancel()

    def run_within(self, delay_s: float) -> None:
        """Run no later than ``delay_s`` from now (no-op if a run is due sooner; thread-safe)."""
        if self.stopped or self._wake is None:
            return
        self._wake(_now() + max(delay_s, 0.0))

    def _after(self, started: float, result: object) -> float:
        """When to run next, after a run that began at ``started`` and returned ``result``."""
        at = started + self.interval_s
        if isinstance(result, (int, float)) and not isinstance(result, bool):
            at = min(at, _now() + max(float(result), 0.0))
        at, self.wanted_at = min(at, self.wanted_at), math.inf
        return at


def _renew_sync(lease: Lease, backend: SyncBackend) -> bool:
    if lease.kind == "lock":
        return backend.lock_extend(lease.key, lease.token, lease.ttl_ms)
    return backend.pool_extend(lease.key, lease.token, lease.ttl_ms)


async def _renew_async(lease: Lease, backend: AsyncBackend) -> bool:
    if lease.kind == "lock":
        return await backend.lock_extend(lease.key, lease.token, lease.ttl_ms)
    return await backend.pool_extend(lease.key, lease.token, lease.ttl_ms)


_Entry = TypeVar("_Entry", bound=tuple[Any, ...])


def _compacted(heap: list[_Entry], stopped: int) -> tuple[list[_Entry], int]:
    """A renewal heap (entries ``(due, seq, item, ...)``) and its count of stopped items, with
    the stopped entries dropped once they are more than 64 and most of the heap."""
    if stopped > 64 and stopped * 2 > len(heap):
        heap = [entry for entry in heap if not entry[2].stopped]
        heapq.heapify(heap)
        stopped = 0
    return heap, stopped


class Renewer:
    """The per-process renewal thread for blocking holders: one heap of due times."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Lease | Periodic]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = 0  # stopped leases still in the heap (approximately: reset on compaction)
        self._pool: ThreadPoolExecutor | None = None

    def start(self, backend: SyncBackend, kind: Kind, key: str, token: str, ttl_ms: int) -> Lease:
        lease = Lease(backend, kind, key, token, ttl_ms)
        lease._on_stop = self._stopped_one
        self._schedule(_now() + lease.interval_s, lease)
        return lease

    def every(self, name: str, interval_s: float, job: Callable[[], object]) -> Periodic:
        """Run ``job()`` every ``interval_s`` on this thread's workers, first after one interval."""
        periodic = Periodic(name, interval_s, job)
        periodic._wake = lambda at: self._sooner(periodic, at)
        self._schedule_periodic(periodic, _now() + periodic.interval_s)
        return periodic

    def _schedule_periodic(self, periodic: Periodic, at: float) -> None:
        with self._cond:
            periodic.next_at = at
            self._schedule(at, periodic)

    def _sooner(self, periodic: Periodic, at: float) -> None:
        with self._cond:  # re-entrant: the check and the schedule under one hold
            if periodic.next_at == math.inf:  # running: it schedules its next run when done
                periodic.wanted_at = min(periodic.wanted_at, at)
            elif at < periodic.next_at:
                self._schedule_periodic(periodic, at)  # the later heap entry goes stale

    def _schedule(self, due: float, item: Lease | Periodic) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), item))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cachify-renewer", daemon=True)
                self._thread.start()
            if self._heap[0][2] is item:  # due before everything else: the thread must wake earlier
                self._cond.notify()

    def _run_periodic(self, periodic: Periodic) -> None:
        started = _now()
        result: object = None
        try:
            result = periodic.job()
        except Exception as exc:
            logger.warning("cachify: periodic job %s failed: %s", periodic.name, exc)
        if not periodic.stopped:
            with self._cond:
                self._schedule_periodic(periodic, periodic._after(started, result))

    def _stopped_one(self) -> None:
        """A lease stopped: its heap entry is dead weight until due (up to TTL/3 away). Drop
        the dead entries once they are most of the heap, so memory follows live leases."""
        with self._cond:
            self._heap, self._stopped = _compacted(self._heap, self._stopped + 1)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > _now():
                    self._cond.wait(None if not self._heap else self._heap[0][0] - _now())
                due, _, item = heapq.heappop(self._heap)
                if item.stopped:
                    if isinstance(item, Lease):
                        self._stopped = max(0, self._stopped - 1)
                    continue
                if isinstance(item, Periodic):
                    if due != item.next_at:  # moved sooner since: this entry is stale
                        continue
                    item.next_at = math.inf  # running
            # Renewals run on a few worker threads: one stalled call (up to a socket timeout)
            # must not delay every other lease past its expiry.
            if isinstance(item, Periodic):
                self._executor().submit(self._run_periodic, item)
            else:
                self._executor().submit(self._renew_one, item)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=RENEWAL_THREADS, thread_name_prefix="cachify-renew")
        return self._pool

    def _renew_one(self, lease: Lease) -> None:
        started = _now()
        with lease._renewing:
            if lease.stopped:
                return
            try:
                alive = _renew_sync(lease, lease.backend)  # type: ignore[arg-type]
                failed = False
            except Exception as exc:  # backend down: try again soon
                logger.warning("cachify: renewing %s %s failed: %s", lease.kind, lease.key, exc)
                alive, failed = True, True
            if not alive:
                lease._lost()
                return
        with self._cond:
            heapq.heappush(self._heap, (started + lease.next_delay_s(failed), next(self._seq), lease))
            self._cond.notify()

    def _after_fork(self) -> None:
        # The child has no renewal thread and owns none of its parent's leases.
        self._cond = threading.Condition()
        self._heap = []
        self._thread = None
        self._stopped = 0
        self._pool = None


renewer = Renewer()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=renewer._after_fork)


class _LoopRenewals:
    """The asyncio twin of :class:`Renewer`, one per event loop: a heap of due times and one
    timer for the earliest. Starting a lease is a heap push and stopping it a flag (no task per
    lease: creating, starting and cancelling one cost 14 µs of CPU per lease here); each due
    renewal runs as a task of its own, so one stalled call delays no other lease. Every method
    runs on the loop's thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Lease, AsyncBackend]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf
        self._stopped = 0  # stopped leases still in the heap (approximately, as Renewer's)

    def add(self, lease: Lease, backend: AsyncBackend, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), lease, backend))
        if due < self._timer_due:
            self._arm()

    def _arm(self) -> None:
        while self._heap and self._heap[0][2].stopped:
            heapq.heappop(self._heap)
            self._stopped = max(0, self._stopped - 1)
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_due = None, math.inf
        if self._heap:
            self._timer_due = self._heap[0][0]
            # A context of its own: the timer would otherwise carry (and keep alive) the context
            # of whichever holder armed it into every renewal it starts.
            self._timer = asyncio.get_running_loop().call_later(
                max(self._timer_due - _now(), 0.0), self._fire, context=contextvars.Context()
            )

    def _fire(self) -> None:
        self._timer, self._timer_due = None, math.inf
        now, loop = _now(), asyncio.get_running_loop()
        try:
            while self._heap and self._heap[0][0] <= now:
                _, seq, lease, backend = heapq.heappop(self._heap)
                if lease.stopped:
                    self._stopped = max(0, self._stopped - 1)
                    continue
                try:
                    lease._task = loop.create_task(
                        self._renew(lease, backend), name=f"cachify-renew:{lease.key}"
                    )
                except Exception as exc:  # a task factory that refused: this lease tries again soon
                    logger.warning("cachify: renewing %s %s failed: %s", lease.kind, lease.key, exc)
                    heapq.heappush(self._heap, (now + lease.next_delay_s(True), seq, lease, backend))
        finally:
            self._arm()  # whatever happened above, the leases still in the heap keep a timer

    async def _renew(self, lease: Lease, backend: AsyncBackend) -> None:
        started = _now()
        try:
            alive = await _renew_async(lease, backend)
            failed = False
        except Exception as exc:  # backend down: try again soon
            logger.warning("cachify: renewing %s %s failed: %s", lease.kind, lease.key, exc)
            alive, failed = True, True
        lease._task = None
        if lease.stopped:
            return
        if not alive:
            lease._lost()
            return
        self.add(lease, backend, started + lease.next_delay_s(failed))

    def _stopped_one(self) -> None:
        """As :meth:`Renewer._stopped_one`: drop dead entries once they are most of the heap."""
        self._heap, self._stopped = _compacted(self._heap, self._stopped + 1)


#: Each event loop's renewals. A plain dict, not weak keys: a pending timer references its loop,
#: so a weak key would never die; closed loops are dropped when a new loop starts a lease.
_loop_renewals: dict[asyncio.AbstractEventLoop, _LoopRenewals] = {}


def start_async_renewal(backend: AsyncBackend, kind: Kind, key: str, token: str, ttl_ms: int) -> Lease:
    """Renew on the running loop, every third of the TTL; ``lease.stop()`` ends it (and cancels
    a renewal in flight)."""
    lease = Lease(backend, kind, key, token, ttl_ms)
    loop = asyncio.get_running_loop()
    renewals = _loop_renewals.get(loop)
    if renewals is None:
        for old in [old for old in _loop_renewals if old.is_closed()]:
            del _loop_renewals[old]
        renewals = _loop_renewals[loop] = _LoopRenewals()
    lease._loop = loop
    lease._on_stop = renewals._stopped_one
    renewals.add(lease, backend, _now() + lease.interval_s)
    return lease


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def every_async(name: str, interval_s: float, job: Callable[[], Awaitable[object]]) -> Periodic:
    """Await ``job()`` every ``interval_s`` from a task on the running loop; ``stop()`` cancels it.
    Sooner runs as :class:`Periodic` says (``run_within`` may be called from any thread)."""
    periodic = Periodic(name, interval_s, job)
    loop_ = asyncio.get_running_loop()
    woken = asyncio.Event()

    def sooner(at: float) -> None:
        if periodic.next_at == math.inf:  # running: it schedules its next run when done
            periodic.wanted_at = min(periodic.wanted_at, at)
        elif at < periodic.next_at:
            periodic.next_at = at
            woken.set()

    def wake(at: float) -> None:
        with contextlib.suppress(RuntimeError):  # its loop has closed: nothing left to wake
            loop_.call_soon_threadsafe(sooner, at)

    periodic._wake = wake

    periodic.next_at = _now() + periodic.interval_s  # before the task starts: a sooner wins

    async def loop() -> None:
        while not periodic.stopped:
            delay = periodic.next_at - _now()
            if delay > 0:
                woken.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(woken.wait(), delay)
                continue  # woken for a sooner run, or the time came: look again
            if periodic.stopped:
                return
            started, result = _now(), None
            periodic.next_at = math.inf
            try:
                result = await job()
            except Exception as exc:
                logger.warning("cachify: periodic job %s failed: %s", name, exc)
            periodic.next_at = periodic._after(started, result)

    periodic._task = loop_.create_task(loop(), name=f"cachify-periodic:{name}")
    return periodic


def begin(
    c: Cachify, kind: Kind, key: str, token: str, ttl_ms: int | None, auto_renew: bool, asynchronous: bool
) -> Lease | None:
    """Start renewing a just-acquired hold if asked to and if it can expire at all."""
    if not auto_renew or ttl_ms is None:
        return None
    if asynchronous:
        return start_async_renewal(c.async_backend, kind, key, token, ttl_ms)
    return renewer.start(c.sync_backend, kind, key, token, ttl_ms)


def end(lease: Lease | None) -> None:
    if lease is not None:
        lease.stop()
