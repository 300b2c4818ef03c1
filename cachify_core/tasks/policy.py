"""The task policy: what each task option means, as backend steps — claim at send, admit before
the run, finish after it. :mod:`.delivery` decides *when* each of these happens in a delivery's
life; integrations only map their framework's hooks onto a :class:`~.delivery.Delivery`.

Order (docs/TASK_OPTIONS.md): cache check → dedup → pool slot → run → store result → release
slot → release dedup hold. Holds carry the task id as owner token, so a retry or redelivery of
the same task id is recognised as the holder; slots carry a fresh token per run (or one the
integration derives from the delivery, for Celery's prefork children). Both are renewed while
the task runs (:mod:`cachify_core.leases`), so a dead worker's hold and slot end within their
TTL.

Round trips on a single Redis server, with any of ``once_key`` (queued), ``pool_key`` and
``cache_key``: the claim at send 1 (2 on a conflict: the holder's id is read back); the
admission 1 (the cache lookup, the hold and the slot — or the park — go as one batch); the
finish 1 (store a cacheable success, release the slot with its hand-over, release the hold:
one batch). 3 in all. Off the common path: a cache hit gives back the slot the batch took
and the claim (+2); a park sets its hold's no-expiry (+1), and its hand-over is admitted and
finished like any delivery; mode until_started releases its claim at the start (+1); a
``rate_*`` bound adds 1 per bound (the admission is then made call by call). On Redis Cluster,
where each feature's keys live in their own hash slot, and on the memory backend, a batch is
made call by call: about 1 per feature per phase.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .. import leases
from ..backends.base import DEFAULT_MAX_WAITING, CacheRead, Handover, RoomAdmission, RoomSettings, RoomStatus
from ..backends.memory import AsyncMemoryBackend, MemoryStore
from ..errors import CachifyBackendError, CachifyInitError, CachifyLockError, CachifyPoolFullError
from ..instance import Cachify, get_cachify, seconds_to_ms
from ..metrics import events
from ..protocols import UnsetType
from ..rooms import registry_key
from ..serialization import CachifySerializationError
from ..steps import Batch, Step, Steps, run_async, run_blocking
from ..tokens import new_token
from . import logs, owed
from .options import DEFAULT_STORE_BACKOFF_S, TaskOptions
from .rate_step import rate_cancel_steps, rate_release_step, rate_release_steps, rate_steps

__all__ = [
    "Admission",
    "CachifyDuplicateError",
    "Claim",
    "Outcome",
    "RunHandle",
    "TaskPolicy",
    "Verdict",
]

logger = logs.logger

Outcome = Literal["success", "failure", "retry"]
#: Tries of a claim: a hold freed between a failed SET NX and the holder read is tried again.
_CLAIM_ATTEMPTS = 3


class CachifyDuplicateError(CachifyLockError):
    """A task was sent while another holds its ``once_key`` (with ``once_raise=True``)."""

    def __init__(self, task_name: str, key: str, holder_id: str) -> None:
        super().__init__(f"task {task_name!r}: {key} is already held by task {holder_id}")
        self.task_name = task_name
        self.key = key
        self.holder_id = holder_id


@dataclass(frozen=True)
class Claim:
    """Result of :meth:`TaskPolicy.claim`: proceed to publish, or a duplicate of ``holder_id``."""

    key: str | None
    holder_id: str | None = None

    @property
    def duplicate(self) -> bool:
        return self.holder_id is not None


class Verdict(enum.Enum):
    RUN = "run"  #: run the task body, then call finish()
    CACHED = "cached"  #: do not run; ``value`` is the task's result
    RETURN = "return"  #: pool full with a callable on_full: ``value`` is the task's result
    SKIP = "skip"  #: acknowledge without running (duplicate, or on_full="drop")
    REQUEUE = "requeue"  #: publish again after ``delay_s`` with requeues + 1, then ack this one
    PARKED = "parked"  #: acknowledge without running: the pool's waiting room publishes it again


@dataclass
class RunHandle:
    """What one admitted run holds, for finish()."""

    cachify: Cachify
    task_id: str
    once_key: str | None = None
    once_lease: leases.Lease | None = None
    slot_key: str | None = None
    slot_token: str | None = None
    slot_lease: leases.Lease | None = None
    cache_ns: str = ""
    cache_key: str | None = None
    cache_gen: str = "0"
    finished: bool = False
    #: The pool's waiting room, when the slot came through it: released with hand-over.
    room: RoomSettings | None = None
    #: The waiting-room entry whose reserved slot this run claimed (``room_release(claimed=)``).
    claimed: str | None = None
    #: Hand-overs the finish made: the integration publishes them (drained by the delivery).
    handed: list[Handover] = field(default_factory=list, repr=False)
    #: Whether the slot token was made for this run alone (the integration named none): only
    #: then may a release the store did not hear be made later (:mod:`.owed`). A token named
    #: after the delivery (Celery's) is presented again by a redelivered copy, which takes the
    #: slot over: a late release would free the copy's running slot.
    slot_token_fresh: bool = False
    #: Whether this admission took the hold itself (not only refreshed the claim at send, or a
    #: running holder's of the same id): a duplicate hand-over gives such a hold back.
    once_fresh: bool = False
    #: A rate limiter's timed entry this run claimed when its time came (``rate_*``).
    rate_room_key: str | None = None
    rate_token: str | None = None
    rate_room: RoomSettings | None = None
    rate_claimed: str | None = None
    rate_lease: leases.Lease | None = None


@dataclass
class Admission:
    verdict: Verdict
    value: Any = None
    delay_s: float = 0.0
    reason: str = ""
    handle: RunHandle | None = field(default=None, repr=False)
    #: Hand-overs the admission made (whatever the verdict): the integration publishes them.
    handed: tuple[Handover, ...] = field(default=(), repr=False)


_UNSET: Any = object()  #: a batch answer not asked for (or already read)


class _Prefetch:
    """Answers the admission's batch got ahead of the steps that read them (each read once)."""

    __slots__ = ("cache", "hold", "slot")

    def __init__(self) -> None:
        self.cache: Any = _UNSET
        self.hold: Any = _UNSET
        self.slot: Any = _UNSET

    def take(self, kind: str) -> Any:
        value = getattr(self, kind)
        setattr(self, kind, _UNSET)
        return value


@dataclass(frozen=True)
class _SlotPlan:
    """How one admission asks for its pool slot: the pool's key, the slot token and lease, and,
    through the waiting room, the room and the entry it parks as."""

    key: str
    token: str
    ttl_ms: int
    room: RoomSettings | None
    entry_id: str
    data: bytes
    parks: bool


def _slot_step(plan: _SlotPlan, max_size: int, reservation: str | None) -> Step:
    key, token, room = plan.key, plan.token, plan.room
    if room is None:
        ttl_ms = plan.ttl_ms
        return lambda b: b.pool_acquire(key, token, max_size, ttl_ms, False)
    entry_id, data = plan.entry_id, plan.data
    return lambda b: b.room_acquire(key, token, entry_id, data, room, reservation)


class TaskPolicy:
    """One task's options bound to a Cachify instance (the global one unless given)."""

    def __init__(self, options: TaskOptions, cachify: Cachify | Callable[[], Cachify] | None = None) -> None:
        self.options = options
        if cachify is None:
            self._provider: Callable[[], Cachify] = get_cachify
        elif isinstance(cachify, Cachify):
            self._provider = lambda: cachify
        else:
            self._provider = cachify
        # Worked out once: the options are frozen, and these are read on every admission.
        self._ttls_ms: tuple[int, int] | None = None  #: (once_ttl, pool_slot_ttl)
        self._rooms: dict[str, tuple[RoomSettings, RoomSettings]] = {}  #: prefix -> (parks, not)
        self._timed_rooms: dict[str, RoomSettings] = {}  #: prefix -> a rate limiter's timed room

    @property
    def cachify(self) -> Cachify:
        return self._provider()

    # -- shared, no I/O ----------------------------------------------------------------------
    def _key(self, c: Cachify, which: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
        template = getattr(self.options, which)
        return None if template is None else c.prefix + template.format(args, kwargs)

    def _cache_location(
        self, c: Cachify, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[str, str]:
        """(namespace, entry key) of the result cache, laid out as ``@cached`` lays its own."""
        template = self.options.cache_key
        assert template is not None
        return template.namespace(c.prefix), template.format(args, kwargs)

    def label(self, which: str) -> str:
        """The metrics label of a key option (``"pool_key"``...): its template as declared."""
        template = getattr(self.options, which)
        return "" if template is None else str(template.template)

    def once_key(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
        return self._key(self.cachify, "once_key", args, kwargs)

    def _ttls(self) -> tuple[int, int]:
        ttls = self._ttls_ms
        if ttls is None:
            o = self.options
            ttls = self._ttls_ms = (
                seconds_to_ms(o.once_ttl_s, "once_ttl") or 0,
                seconds_to_ms(o.pool_slot_ttl_s, "pool_slot_ttl") or 0,
            )
        return ttls

    def _once_ttl_ms(self) -> int:
        return self._ttls()[0]

    def slot_ttl_ms(self) -> int:
        return self._ttls()[1]

    def _cache_ttl_ms(self, c: Cachify) -> int | None:
        ttl = self.options.cache_ttl_s
        return c.default_cache_ttl_ms if isinstance(ttl, UnsetType) else seconds_to_ms(ttl, "cache_ttl")

    def backoff_s(self, requeues: int, bounds_s: tuple[float, float] | None = None) -> float:
        """Exponential backoff with full jitter before requeue number ``requeues + 1``, within
        ``bounds_s`` = (first, max) seconds (default: the task's ``pool_backoff``)."""
        first, most = bounds_s or self.options.pool_backoff_s
        return random.uniform(0.0, min(most, first * 2.0 ** min(requeues, 62)))

    def store_error(self, task_id: str, requeues: int, error: CachifyBackendError) -> Admission:
        """What a delivery whose admission cannot reach the store does (``on_store_error``).

        ``"defer"``: back through the broker after a bounded backoff, same task id, retries
        untouched (nothing was run, so nothing is lost). ``"run"``: run with no gate at all.
        ``"fail"``: the error propagates. Logged once per outage (:mod:`.logs`).
        """
        mode = self.options.on_store_error
        if mode == "fail":
            raise error
        if mode == "run":
            logs.store_unreachable(
                self.options.task_name, task_id, "running tasks ungated (on_store_error='run')", error
            )
            return Admission(Verdict.RUN, handle=RunHandle(self.cachify, task_id), reason="store unreachable")
        delay_s = self.backoff_s(requeues, DEFAULT_STORE_BACKOFF_S)
        logs.store_unreachable(
            self.options.task_name, task_id, "deferring deliveries through the broker", error
        )
        return Admission(Verdict.REQUEUE, delay_s=delay_s, reason=f"store unreachable: {error}")

    def _duplicate(self, task_id: str, key: str, holder: str, dependents: bool) -> Claim:
        if self.options.once_raise or dependents:
            raise CachifyDuplicateError(self.options.task_name, key, holder)
        if events.sink is not None:
            events.sink.count("duplicate_at_send", "once", self.label("once_key"), self.options.task_name)
        logs.not_sent(self.options.task_name, task_id, key, holder)
        return Claim(key, holder)

    def _claim_failed(self, task_id: str, error: CachifyBackendError) -> Claim:
        """A first send's claim could not reach the store (``once_on_store_error``): fail naming
        the task, or send ungated (the run checks the hold again when the store is back). A
        resend never gets here: :meth:`claim_steps` sends it whatever the store says."""
        name = self.options.task_name
        if self.options.once_on_store_error == "send":
            logs.store_unreachable(
                name, task_id, "sending without deduplication (once_on_store_error='send')", error
            )
            return Claim(None)
        raise CachifyBackendError(
            f"task {name!r}: not sent: its once_key hold could not be taken because the store is "
            f"unreachable ({error}); pass once_on_store_error='send' to send without deduplication then"
        ) from error

    def require_shared_store(self, framework: str, unless: Callable[[], bool] | None = None) -> None:
        """Refuse the embedded in-memory backend when ``framework``'s workers are other processes.

        The memory backend coordinates one process: with it, a hold taken by the sender is
        invisible to the workers (and a prefork child's to its siblings), so deduplication and
        caps would silently do nothing, or a result would be served from a stale copy.
        ``unless``: asked only when the store is the embedded one (it may cost more than the
        check: Celery reads its configuration), true when the workers run in this process
        after all (an in-memory broker, eager runs).
        """
        if not self.options.active:
            return
        backend = self.cachify.async_backend
        if isinstance(backend, (MemoryStore, AsyncMemoryBackend)) and not (unless is not None and unless()):
            raise CachifyInitError(
                f"task {self.options.task_name!r}: cachify uses the embedded in-memory backend, which "
                f"coordinates one process, but {framework} workers run in other processes; call "
                "init_cachify(url='redis://...') (or give the integration cachify=Cachify(url=...)) "
                "before sending or starting workers"
            )

    def _on_full(
        self, task_id: str, requeues: int, args: tuple[Any, ...], kwargs: Mapping[str, Any], key: str
    ) -> Admission:
        """What a run that found its pool full (or whose body raised CachifyPoolFullError) does."""
        o = self.options
        on_full = o.pool_on_full
        message = f"task {o.task_name!r}: pool {key} is full (max_size={o.pool_max_size})"
        if callable(on_full):
            return Admission(Verdict.RETURN, value=on_full(*args, **kwargs), reason=message)
        if on_full == "raise":
            raise CachifyPoolFullError(message)
        if on_full == "drop":
            reason = f"pool {key} full (max_size={o.pool_max_size}, pool_on_full='drop')"
            logs.skipped(o.task_name, task_id, reason, logging.WARNING)
            return Admission(Verdict.SKIP, reason=reason)
        if o.pool_max_requeues is not None and requeues >= o.pool_max_requeues:
            raise CachifyPoolFullError(f"{message}; gave up after {requeues} requeues")
        return Admission(Verdict.REQUEUE, delay_s=self.backoff_s(requeues), reason=f"pool {key} full")

    def body_pool_full(
        self,
        task_id: str,
        requeues: int,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        error: CachifyPoolFullError,
    ) -> Admission:
        """A ``CachifyPoolFullError`` escaped the body (a stacked ``@pooled``/``pool``): handled like
        ``pool_on_full``, requeue by default."""
        if self.options.pool_key is not None:
            key = self._key(self.cachify, "pool_key", args, kwargs) or ""
            return self._on_full(task_id, requeues, args, kwargs, key)
        o = self.options
        if o.pool_max_requeues is not None and requeues >= o.pool_max_requeues:
            raise error
        return Admission(Verdict.REQUEUE, delay_s=self.backoff_s(requeues), reason=f"body raised: {error}")

    def _skip_duplicate(
        self, task_id: str, key: str, holder: str, handed: tuple[Handover, ...] = ()
    ) -> Admission:
        reason = f"duplicate: {key} is held by task {holder}"
        if events.sink is not None:
            events.sink.count("duplicate_at_run", "once", self.label("once_key"), self.options.task_name)
        logs.skipped(self.options.task_name, task_id, reason)
        return Admission(Verdict.SKIP, reason=reason, handed=handed)

    # -- the steps, written once: each ``yield`` is one backend call --------------------------
    # A step is ``lambda backend: backend.<primitive>(...)``; the blocking driver calls it on the
    # sync backend, the asyncio driver awaits it on the async backend. Nothing else differs.

    def claim_steps(
        self,
        c: Cachify,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        resend: bool,
        dependents: bool,
        handed_over: bool = False,
    ) -> Steps[Claim]:
        if not self.options.claims_at_enqueue:
            return Claim(None)
        key = self._key(c, "once_key", args, kwargs)
        assert key is not None
        if resend:
            try:
                if handed_over:
                    return (yield from self._refresh_steps(task_id, key))
                return (yield from self._take_steps(task_id, key, True, dependents))
            except CachifyBackendError as exc:
                # Never dropped: its run checks the hold again. Logged once per outage.
                action = "re-sending retries and requeues without refreshing their holds"
                logs.store_unreachable(self.options.task_name, task_id, action, exc)
                return Claim(None)
            except CachifyLockError as exc:
                logs.resent_unchecked(self.options.task_name, task_id, key, exc)
                return Claim(None)
        return (yield from self._take_steps(task_id, key, False, dependents))

    def _refresh_steps(self, task_id: str, key: str) -> Steps[Claim]:
        """A copy of a hand-over (it carries a waiting-room reservation) is sent again: its hold
        is refreshed if it is still this task's, never taken when free. A free hold means
        another copy of the hand-over ran and ended; taken here, nobody would give it back when
        this copy's admission skips it (its admission takes a free hold itself, and gives it
        back before such a skip). 1 round trip."""
        if (yield lambda b: b.lock_extend(key, task_id, self._once_ttl_ms())):
            return Claim(key)
        return Claim(None)

    def _take_steps(self, task_id: str, key: str, resend: bool, dependents: bool) -> Steps[Claim]:
        ttl = self._once_ttl_ms()
        if resend and (yield lambda b: b.lock_extend(key, task_id, ttl)):
            return Claim(key)  # the usual resend: the hold is still this task's (1 round trip)
        for _ in range(_CLAIM_ATTEMPTS):
            if (yield lambda b: b.lock_acquire(key, task_id, ttl, False)):
                return Claim(key)
            holder = yield lambda b: b.lock_holder(key)
            if holder == task_id:  # a retry or re-publish of the holder itself
                yield lambda b: b.lock_extend(key, task_id, ttl)
                return Claim(key)
            if holder is not None:
                if resend:
                    # A retry or requeue of a task that was already admitted once: its caller
                    # waits for it, so it is sent; its run checks the hold again.
                    logs.resent_while_held(self.options.task_name, task_id, key, holder)
                    return Claim(None)
                return self._duplicate(task_id, key, holder, dependents)
        raise CachifyLockError(f"task {self.options.task_name!r}: {key} kept changing hands; not sent")

    def unclaim_steps(self, task_id: str, key: str | None) -> Steps[None]:
        if key is not None:
            yield lambda b: b.lock_release(key, task_id)

    def _hold_steps(self, key: str, task_id: str, first: object = _UNSET) -> Steps[tuple[str | None, bool]]:
        """Make sure ``task_id`` holds ``key`` for its run: ``(None, fresh)`` — ``fresh`` if it
        took the hold now rather than refreshing its own — or ``(holder, False)`` with the other
        holder's id. ``first``: the answer of the batch's first attempt (an extend in mode
        queued, a take in mode running)."""
        if first is True:
            return None, self.options.once_mode == "running"
        ttl = self._once_ttl_ms()
        holder: str | None = None
        for _ in range(_CLAIM_ATTEMPTS):
            if (yield lambda b: b.lock_extend(key, task_id, ttl)):
                return None, False
            if (yield lambda b: b.lock_acquire(key, task_id, ttl, False)):
                return None, True
            holder = yield lambda b: b.lock_holder(key)
            if holder is not None and holder != task_id:
                return holder, False
        return holder or "unknown", False

    def _cache_read_steps(
        self, c: Cachify, task_id: str, handle: RunHandle, ns: str, key: str, read: object = _UNSET
    ) -> Steps[Any]:
        """The cached entry for this run, or ``None``: a miss, or (failing open) an unreachable
        store. ``read``: the lookup already made (in the admission's batch)."""
        try:
            if read is _UNSET:
                read = yield lambda b: b.cache_get(ns, key)
            assert isinstance(read, CacheRead)
        except CachifyBackendError as exc:
            if events.sink is not None:
                events.sink.count("cache_error", "cache", self.label("cache_key"), self.options.task_name)
            if self.options.cache_on_backend_error == "raise":
                raise
            logs.cache_unreachable(self.options.task_name, task_id, exc)
            return None  # handle.cache_key stays None: no write-back either
        handle.cache_ns, handle.cache_key, handle.cache_gen = ns, key, read.gen
        if events.sink is not None:
            hit = "cache_miss" if read.value is None else "cache_hit"
            events.sink.count(hit, "cache", self.label("cache_key"), self.options.task_name)
        if read.value is None:
            return None
        return c.codec.unpack(read.value, lambda: f"task {self.options.task_name!r} {key!r}")

    def admit_steps(
        self,
        c: Cachify,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        requeues: int,
        asyncio: bool,
        slot_token: str | None,
        reservation: str | None = None,
        payload: Callable[[], bytes] | None = None,
        handed_sink: list[Handover] | None = None,
        park_id: str | None = None,
    ) -> Steps[Admission]:
        """``reservation``: the waiting-room entry a handed-over copy carries; ``payload``: how
        to publish this delivery again (``None``: it cannot park, e.g. an eager run);
        ``handed_sink``: where the hand-overs made before an admission that raises go (they are
        otherwise returned in the ``Admission``); ``park_id``: the delivery's name in a waiting
        room (:attr:`.Delivery.park_id`)."""
        o = self.options
        handle = RunHandle(c, task_id)
        started_key: str | None = None  # mode until_started: the claim to give back at the start
        plan = self._slot_plan(c, args, kwargs, asyncio, slot_token, reservation, payload, park_id)
        pre = _Prefetch()
        # Each key is formatted once per admission: the batch and the steps after it share them.
        cache_at = None if o.cache_key is None else self._cache_location(c, args, kwargs)
        once_key = None if o.once_key is None else self._key(c, "once_key", args, kwargs)
        try:
            yield from self._prefetch_steps(c, task_id, asyncio, plan, reservation, pre, cache_at, once_key)
            if cache_at is not None:
                ns, cache_key = cache_at
                entry = yield from self._cache_read_steps(
                    c, task_id, handle, ns, cache_key, pre.take("cache")
                )
                if entry is not None:
                    handed = yield from self._unused_slot_steps(plan, pre, reservation)
                    took = pre.take("hold") is True and o.once_mode == "running"  # the batch took it
                    yield from self.unclaim_steps(task_id, once_key if o.claims_at_enqueue or took else None)
                    handed += yield from self.cancel_steps(c, reservation, args, kwargs)
                    logs.cache_hit(o.task_name, task_id, cache_key)
                    return Admission(Verdict.CACHED, value=entry.value, reason="cache hit", handed=handed)
            if once_key is not None:
                if o.once_mode == "until_started":
                    started_key = once_key  # released once the run really starts (slot taken)
                else:
                    holder, handle.once_fresh = yield from self._hold_steps(
                        once_key, task_id, pre.take("hold")
                    )
                    if holder is not None:
                        handed = yield from self._unused_slot_steps(plan, pre, reservation)
                        handed += yield from self.cancel_steps(c, reservation, args, kwargs)
                        return self._skip_duplicate(task_id, once_key, holder, handed)
                    handle.once_key = once_key
                    handle.once_lease = leases.begin(
                        c, "lock", once_key, task_id, self._once_ttl_ms(), True, asyncio
                    )
                    if events.sink is not None:
                        events.sink.acquired("once", self.label("once_key"), o.task_name, task_id)
            if o.rate_bounds:
                limited, settled = yield from rate_steps(
                    self, c, handle, args, kwargs, reservation, payload, asyncio, started_key
                )
                if limited is not None:
                    if settled:  # parked, or a duplicate hand-over: holds already seen to
                        return limited
                    requeued = limited.verdict is Verdict.REQUEUE
                    yield from self._release_steps(handle, keep_queued_hold=requeued)
                    if not requeued:
                        yield from self.unclaim_steps(task_id, started_key)
                    return limited
            if plan is not None:
                slot_key, token, room = plan.key, plan.token, plan.room
                got = pre.take("slot")
                if got is _UNSET:
                    got = yield _slot_step(plan, o.pool_max_size, reservation)
                if room is not None:
                    assert isinstance(got, RoomAdmission)
                    status, handed = got.status, got.handed
                    if events.sink is not None and status is RoomStatus.PARKED:
                        events.sink.room_parked(
                            self.label("pool_key"), o.task_name, plan.entry_id, c, slot_key
                        )
                    if status is RoomStatus.PARKED or status is RoomStatus.DUPLICATE:
                        return (
                            yield from self.parked_or_duplicate_steps(
                                handle, status, started_key, slot_key, handed
                            )
                        )
                    if status is RoomStatus.FULL and plan.parks:
                        logs.room_full(o.task_name, task_id, slot_key, o.pool_max_waiting)
                    acquired = status is not RoomStatus.FULL
                    handle.handed.extend(handed)
                    handle.claimed = reservation if status is RoomStatus.CLAIMED else None
                else:
                    acquired = bool(got)
                if not acquired:
                    # Only a requeue runs this task id again: a drop, an on_full value and a
                    # raise end it (a framework retry re-claims the key when it re-publishes).
                    try:
                        admission = self._on_full(task_id, requeues, args, kwargs, slot_key)
                    except BaseException:
                        yield from self._release_steps(handle, keep_queued_hold=False)
                        yield from self.unclaim_steps(task_id, started_key)
                        raise
                    requeued = admission.verdict is Verdict.REQUEUE
                    yield from self._release_steps(handle, keep_queued_hold=requeued)
                    if not requeued:
                        yield from self.unclaim_steps(task_id, started_key)
                    admission.handed = tuple(handle.handed)
                    return admission
                handle.slot_key, handle.slot_token, handle.room = slot_key, token, room
                handle.slot_token_fresh = slot_token is None
                handle.slot_lease = leases.begin(c, "pool", slot_key, token, plan.ttl_ms, True, asyncio)
                if events.sink is not None:
                    events.sink.acquired("pool", self.label("pool_key"), o.task_name, token, c, slot_key)
                    if handle.claimed is not None:
                        events.sink.room_claimed(self.label("pool_key"), o.task_name, handle.claimed)
            yield from self.unclaim_steps(task_id, started_key)
        except BaseException:
            # Failed or cancelled half-way: give back what this admission took (a queued claim
            # stays: the framework decides whether the task id runs again). Renewals stop in
            # any case: a store that cannot be reached now is left to the TTLs.
            for lease in (handle.once_lease, handle.slot_lease, handle.rate_lease):
                leases.end(lease)
            if not isinstance(sys.exc_info()[1], CachifyBackendError):
                try:
                    handle.handed.extend((yield from self._unused_slot_steps(plan, pre, reservation)))
                    if pre.take("hold") is True and o.once_mode == "running" and handle.once_key is None:
                        yield from self.unclaim_steps(task_id, once_key)
                    claimed = handle.claimed is not None or handle.rate_claimed is not None
                    yield from self._release_steps(handle, keep_queued_hold=True)
                    if not claimed:  # a handed-over copy that will not run: its slot goes on
                        handle.handed.extend((yield from self.cancel_steps(c, reservation, args, kwargs)))
                except Exception as exc:
                    logger.error("cachify: task %s: releasing after a failed admission: %s", o.task_name, exc)
            if handed_sink is not None:
                handed_sink.extend(handle.handed)
            raise
        handed, handle.handed = tuple(handle.handed), []
        return Admission(Verdict.RUN, handle=handle, handed=handed)

    def _slot_plan(
        self,
        c: Cachify,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        asyncio: bool,
        slot_token: str | None,
        reservation: str | None,
        payload: Callable[[], bytes] | None,
        park_id: str | None = None,
    ) -> _SlotPlan | None:
        """How this delivery asks for its pool slot (``None``: no pool): through the waiting
        room wherever the store has rooms, so every release hands the slot on and nobody takes
        a freed slot ahead of the line; a delivery that may not park (another ``pool_on_full``,
        no payload, ``pool_max_waiting=0``) asks with a room that holds nothing new (FULL)."""
        o = self.options
        if o.pool_key is None:
            return None
        slot_key = self._key(c, "pool_key", args, kwargs)
        assert slot_key is not None
        backend = c.async_backend if asyncio else c.sync_backend
        parks = payload is not None and o.pool_on_full == "requeue" and o.pool_max_waiting > 0
        token = slot_token or new_token()
        if backend.supports_waiting_room:
            room = self._room(c, parks)
            data = payload() if parks and payload is not None else b""
            # Derived from the delivery where the integration names it (its park id, else its
            # slot token: task id, retries, requeues), so its redelivery after a crash between
            # the park and the acknowledgement is recognised and acknowledged, not parked twice.
            named = park_id or slot_token
            entry_id = "p:" + named if named else new_token()
            return _SlotPlan(slot_key, token, self.slot_ttl_ms(), room, entry_id, data, parks)
        return _SlotPlan(slot_key, token, self.slot_ttl_ms(), None, "", b"", parks)

    def _prefetch_steps(
        self,
        c: Cachify,
        task_id: str,
        asyncio: bool,
        plan: _SlotPlan | None,
        reservation: str | None,
        pre: _Prefetch,
        cache_at: tuple[str, str] | None,
        once_key: str | None,
    ) -> Steps[None]:
        """On a store that makes a batch in one round trip (a single Redis server), ask for the
        cache entry, the hold and the slot at once: the admission then reads their answers
        instead of asking one after the other (a hit or a duplicate gives the slot back). Each
        answer is what the same call made alone would have said. Not with rate limits (their
        step comes between the hold and the slot)."""
        o = self.options
        backend = c.async_backend if asyncio else c.sync_backend
        if not backend.pipelines or o.rate_bounds:
            return
        steps: list[Step] = []
        kinds: list[str] = []
        if cache_at is not None:
            ns, cache_key = cache_at
            steps.append(lambda b: b.cache_get(ns, cache_key))
            kinds.append("cache")
        if once_key is not None and o.once_mode != "until_started":
            ttl = self._once_ttl_ms()
            if o.once_mode == "queued":  # the claim at send took it: refresh it
                steps.append(lambda b: b.lock_extend(once_key, task_id, ttl))
            else:
                steps.append(lambda b: b.lock_acquire(once_key, task_id, ttl, False))
            kinds.append("hold")
        if plan is not None:
            steps.append(_slot_step(plan, o.pool_max_size, reservation))
            kinds.append("slot")
        if len(steps) < 2:
            return
        results = yield Batch(*steps)
        for kind, result in zip(kinds, results, strict=True):
            setattr(pre, kind, result)

    def _unused_slot_steps(
        self, plan: _SlotPlan | None, pre: _Prefetch, reservation: str | None
    ) -> Steps[tuple[Handover, ...]]:
        """Give back a slot the batch took for a delivery that will not run after all (a cache
        hit, a duplicate): the hand-overs that makes (a parked entry of its own leaves)."""
        got = pre.take("slot")
        if plan is None or got is _UNSET:
            return ()
        key, token, room = plan.key, plan.token, plan.room
        if room is None:
            if got:
                yield lambda b: b.pool_release(key, token)
            return ()
        assert isinstance(got, RoomAdmission)
        handed = list(got.handed)
        if got.status in (RoomStatus.ACQUIRED, RoomStatus.CLAIMED):
            claimed = reservation if got.status is RoomStatus.CLAIMED else None
            released = yield lambda b: b.room_release(key, token, room, claimed)
            handed.extend(released.handed)
        elif got.status is RoomStatus.PARKED:
            entry_id = plan.entry_id
            cancelled = yield lambda b: b.room_cancel(key, entry_id, room)
            handed.extend(cancelled.handed)
        return tuple(handed)

    def _room(self, c: Cachify, parks: bool = True) -> RoomSettings:
        """The task's pool's waiting room, as the backend's ``room_*`` primitives take it
        (``parks=False``: the same room for a delivery that may not park: it holds nothing new)."""
        pair = self._rooms.get(c.prefix)
        if pair is None:
            o = self.options
            room = RoomSettings(
                registry=registry_key(c.prefix),
                max_size=o.pool_max_size,
                slot_ttl_ms=self.slot_ttl_ms(),
                max_waiting=o.pool_max_waiting,
            )
            pair = self._rooms[c.prefix] = (room, dataclasses.replace(room, max_waiting=0))
        return pair[0] if parks else pair[1]

    def timed_room(self, c: Cachify) -> RoomSettings:
        """The room of the task's rate limiters' timed entries: no slots of its own; a claimed
        arrival's lease lives as a pool slot does (made once per instance prefix)."""
        room = self._timed_rooms.get(c.prefix)
        if room is None:
            room = self._timed_rooms[c.prefix] = RoomSettings(
                registry=registry_key(c.prefix),
                max_size=0,
                slot_ttl_ms=self.slot_ttl_ms(),
                max_waiting=DEFAULT_MAX_WAITING,
            )
        return room

    def parked_or_duplicate_steps(
        self,
        handle: RunHandle,
        status: RoomStatus,
        started_key: str | None,
        slot_key: str,
        handed: tuple[Handover, ...],
    ) -> Steps[Admission]:
        """The waiting room kept this delivery (PARKED) or knows it for a copy of a claimed
        hand-over (DUPLICATE): it does not run, and is acknowledged.

        Parked, its dedup hold must outlive any wait: a queued hold (and an until_started claim)
        loses its expiry until the room hands the task over, and the hand-over's publish and run
        give it its TTL back; a running-mode hold is given back, since nothing runs. A duplicate
        leaves the hold to its claimer (the same task id), unless this admission took it afresh
        (the claimer finished and gave it back). A rate claim it made is finished either way."""
        o = self.options
        leases.end(handle.once_lease)
        once_key, handle.once_key = handle.once_key, None
        if handle.rate_room_key is not None:  # its rate claim is done: counted, and not running
            yield from rate_release_steps(handle)
            handed = (*handed, *handle.handed)
            handle.handed.clear()
        if status is RoomStatus.DUPLICATE:
            if once_key is not None and handle.once_fresh:  # its claimer finished and released it
                yield lambda b: b.lock_release(once_key, handle.task_id)
            reason = f"a copy of a hand-over of {slot_key} that already started"
            if events.sink is not None:
                events.sink.count("duplicate_at_run", "pool", self.label("pool_key"), o.task_name)
            logs.skipped(o.task_name, handle.task_id, reason)
            return Admission(Verdict.SKIP, reason=reason, handed=handed)
        if once_key is not None:
            if o.once_mode == "running":
                yield lambda b: b.lock_release(once_key, handle.task_id)
            else:
                yield lambda b: b.lock_extend(once_key, handle.task_id, None)
        if started_key is not None:
            yield lambda b: b.lock_extend(started_key, handle.task_id, None)
        logs.parked(o.task_name, handle.task_id, slot_key)
        return Admission(Verdict.PARKED, reason=f"parked in the waiting room of {slot_key}", handed=handed)

    def cancel_steps(
        self, c: Cachify, reservation: str | None, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Steps[tuple[Handover, ...]]:
        """A handed-over copy that will not run (a cache hit, a duplicate): its entry leaves the
        waiting room and its reserved slot goes to the next one in line (1 round trip)."""
        if reservation is None:
            return ()
        yield from rate_cancel_steps(self, c, reservation, args, kwargs)
        if self.options.pool_key is None:
            return ()
        slot_key = self._key(c, "pool_key", args, kwargs)
        assert slot_key is not None
        room = self._room(c)
        got = yield lambda b: b.room_cancel(slot_key, reservation, room)
        handed: tuple[Handover, ...] = got.handed
        return handed

    def _release_steps(
        self, handle: RunHandle, keep_queued_hold: bool, retry: bool = False, first: Step | None = None
    ) -> Steps[None]:
        """Release what ``handle`` holds, in one batch (one round trip on a single Redis server),
        after ``first`` (the result's store, at finish). A queued-mode hold is kept (refreshed
        to ``once_ttl``) when the same task id will run again: a retry, or a requeue after a
        full pool. A running-mode hold is kept across a retry too: the retry may already be
        running under the same id (a retry is published before this run ends), and releasing
        by id would pull the hold from under it. A retry keeps carrying a reservation it
        claimed: it must take the claim over, not be taken for a duplicate of it."""
        o = self.options
        leases.end(handle.slot_lease)
        leases.end(handle.once_lease)
        slot_key, slot_token, once_key = handle.slot_key, handle.slot_token, handle.once_key
        handle.slot_key = handle.once_key = None  # released at most once
        room = handle.room
        steps: list[Step] = [] if first is None else [first]
        kinds: list[str] = [] if first is None else ["first"]
        # The same message comes back carrying its reservation after a retry or a requeue:
        # its claims are not finished then, so the copy takes them over.
        comes_back = retry or keep_queued_hold
        slot_release: Step | None = None
        if slot_key is not None and slot_token is not None:
            if room is not None:
                claimed = None if comes_back else handle.claimed
                slot_release = lambda b: b.room_release(slot_key, slot_token, room, claimed)  # noqa: E731
                kinds.append("room")
            else:
                slot_release = lambda b: b.pool_release(slot_key, slot_token)  # noqa: E731
                kinds.append("pool")
            steps.append(slot_release)
        rate_step = rate_release_step(handle, finished=not comes_back)
        if rate_step is not None:
            steps.append(rate_step)
            kinds.append("rate")
        if once_key is not None:
            if (keep_queued_hold and o.once_mode == "queued") or (retry and o.once_mode == "running"):
                ttl = self._once_ttl_ms()
                steps.append(lambda b: b.lock_extend(once_key, handle.task_id, ttl))
                kinds.append("extend")
            else:
                steps.append(lambda b: b.lock_release(once_key, handle.task_id))
                kinds.append("hold")
        if not steps:
            return
        try:
            results = (yield Batch(*steps)) if len(steps) > 1 else ((yield steps[0]),)
        except CachifyBackendError:
            # Left to once_ttl / pool_slot_ttl otherwise: the next admission or sweep tick in
            # this process gives them back (an extended hold ends by its TTL, as it would; so
            # does a slot whose token a redelivered copy may present: slot_token_fresh).
            if "hold" in kinds:
                assert once_key is not None
                owed.owe(handle.cachify, once_key, handle.task_id)
            if slot_release is not None and handle.slot_token_fresh:
                assert slot_key is not None
                assert slot_token is not None
                owed.owe_slot(handle.cachify, slot_key, slot_token, slot_release)
            raise
        for kind, got in zip(kinds, results, strict=True):
            if kind in ("room", "rate"):
                handle.handed.extend(got.handed)
            if events.sink is None:
                continue
            if kind == "room":
                events.sink.released(
                    "pool", self.label("pool_key"), o.task_name, slot_token or "", got.released
                )
            elif kind == "pool":
                events.sink.released("pool", self.label("pool_key"), o.task_name, slot_token or "", got)
            elif kind == "hold":
                events.sink.released("once", self.label("once_key"), o.task_name, handle.task_id, got)

    def finish_steps(self, handle: RunHandle, outcome: Outcome, result: Any) -> Steps[None]:
        """Store a successful result and release everything: one batch (1 round trip on a
        single Redis server; one call per feature elsewhere)."""
        if handle.finished:
            return
        handle.finished = True
        c, ns, cache_key, gen = handle.cachify, handle.cache_ns, handle.cache_key, handle.cache_gen
        store: Step | None = None
        if outcome == "success" and cache_key is not None:
            try:
                data = c.codec.pack(result, f"task {self.options.task_name!r} {cache_key!r}")
            except CachifySerializationError as exc:
                logger.error("cachify: %s; result not cached", exc)
            else:
                ttl = self._cache_ttl_ms(c)
                store = lambda b: b.cache_set(ns, cache_key, data, ttl, gen)  # noqa: E731
        retry = outcome == "retry"
        yield from self._release_steps(handle, keep_queued_hold=retry, retry=retry, first=store)

    def _release_lost_steps(
        self,
        c: Cachify,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        slot_token: str | None,
    ) -> Steps[tuple[Handover, ...]]:
        o = self.options
        handed: tuple[Handover, ...] = ()
        try:
            if o.pool_key is not None and slot_token is not None:
                slot_key = self._key(c, "pool_key", args, kwargs)
                assert slot_key is not None
                if c.sync_backend.supports_waiting_room:
                    room = self._room(c)
                    got = yield lambda b: b.room_release(slot_key, slot_token, room, None)
                    handed = got.handed
                else:
                    yield lambda b: b.pool_release(slot_key, slot_token)
        finally:
            yield from self.unclaim_steps(task_id, self._key(c, "once_key", args, kwargs))
        return handed

    # -- blocking ----------------------------------------------------------------------------
    def claim(
        self,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        resend: bool = False,
        dependents: bool = False,
        handed_over: bool = False,
    ) -> Claim:
        """Before publishing: take the dedup hold for ``task_id`` (modes queued/until_started).

        ``resend``: a retry or requeue of a task already admitted once — never refused; its hold
        is refreshed when it is free or its own. ``handed_over`` (with ``resend``): the message
        carries a waiting-room reservation; its hold is refreshed only while it is its own, a
        free one is left to its admission. ``dependents``: other work waits for this
        message (a group, chain or chord member, a linked callback), so a duplicate raises
        :class:`CachifyDuplicateError` rather than silently not being sent.
        """
        c = self.cachify
        try:
            return run_blocking(
                self.claim_steps(c, task_id, args, kwargs, resend, dependents, handed_over), c.sync_backend
            )
        except CachifyBackendError as exc:
            return self._claim_failed(task_id, exc)

    def unclaim(self, task_id: str, claim: Claim) -> None:
        """The publish failed after the claim: give the hold back."""
        if not claim.duplicate:
            run_blocking(self.unclaim_steps(task_id, claim.key), self.cachify.sync_backend)

    def admit(
        self,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        requeues: int = 0,
        slot_token: str | None = None,
    ) -> Admission:
        """Before running: cache check, dedup, pool slot — in that order. ``slot_token``: the
        token the slot is leased under (default: a fresh one)."""
        c = self.cachify
        steps = self.admit_steps(c, task_id, args, kwargs, requeues, False, slot_token)
        return run_blocking(steps, c.sync_backend)

    def finish(self, handle: RunHandle, outcome: Outcome, result: Any = None) -> None:
        """After the run: store a successful result, release the slot, release the hold (kept
        across a retry in mode queued)."""
        run_blocking(self.finish_steps(handle, outcome, result), handle.cachify.sync_backend)

    def release_requeued(self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Nothing will run under ``task_id`` any more though it holds a claim and has no
        ``RunHandle``: a requeue could not be published, the admission raised for good, or
        another middleware skipped the message."""
        c = self.cachify
        key = self._key(c, "once_key", args, kwargs) if self.options.claims_at_enqueue else None
        run_blocking(self.unclaim_steps(task_id, key), c.sync_backend)

    def release_lost_run(
        self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], slot_token: str | None
    ) -> tuple[Handover, ...]:
        """A run died where it could not release (a killed Celery prefork child): free the slot
        leased under ``slot_token`` and the task's hold, any mode. Owner-checked both, so a slot
        or hold that already moved on to someone else is left alone. 1 round trip each.

        Returns the hand-overs the freed slot made, for the caller to publish (unpublished, the
        waiting room publishes them again after their lease)."""
        c = self.cachify
        steps = self._release_lost_steps(c, task_id, args, kwargs, slot_token)
        handed: tuple[Handover, ...] = run_blocking(steps, c.sync_backend)
        return handed

    # -- asyncio -----------------------------------------------------------------------------
    async def aclaim(
        self,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        resend: bool = False,
        dependents: bool = False,
        handed_over: bool = False,
    ) -> Claim:
        c = self.cachify
        try:
            return await run_async(
                self.claim_steps(c, task_id, args, kwargs, resend, dependents, handed_over), c.async_backend
            )
        except CachifyBackendError as exc:
            return self._claim_failed(task_id, exc)

    async def aunclaim(self, task_id: str, claim: Claim) -> None:
        if not claim.duplicate:
            await run_async(self.unclaim_steps(task_id, claim.key), self.cachify.async_backend)

    async def aadmit(
        self,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        requeues: int = 0,
        slot_token: str | None = None,
    ) -> Admission:
        c = self.cachify
        steps = self.admit_steps(c, task_id, args, kwargs, requeues, True, slot_token)
        return await run_async(steps, c.async_backend)

    async def afinish(self, handle: RunHandle, outcome: Outcome, result: Any = None) -> None:
        await run_async(self.finish_steps(handle, outcome, result), handle.cachify.async_backend)

    async def arelease_requeued(self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        c = self.cachify
        key = self._key(c, "once_key", args, kwargs) if self.options.claims_at_enqueue else None
        await run_async(self.unclaim_steps(task_id, key), c.async_backend)
