"""The backend contract: the few atomic primitives every feature is built from.

``cached``, ``lock``, ``once``, ``pool`` and ``rate`` are policy over these methods and nothing else
(see docs/ARCHITECTURE.md). Each backend comes as a blocking twin and an asyncio twin with
the same method names; keys arrive fully built (prefix and feature postfix included).

Units: ``ttl_ms`` are milliseconds, ``None`` meaning "never expires"; ``timeout_s`` seconds.

Waiting: an acquire made with ``waiting`` > 0 (the seconds the caller will wait before its next
try; ``False``/0: it will not wait) that fails registers the caller as a waiter,
so the next release of that key leaves a wake-up signal; ``wait(key, timeout_s)`` consumes one
signal or returns after ``timeout_s``. On the memory and Redis backends registration and
release are atomic, so a release between a failed acquire and the wait is never missed; the
custom-client backends cannot signal and ``wait`` just sleeps (polling).

Rate limits (``rate_acquire``) are GCRA: each limit of a limiter keeps one number, its
*theoretical arrival time* (TAT, microseconds of the store's clock: Redis server time, the
memory store's monotonic clock), at ``<key>:<limit.name>``. A call of weight ``cost`` is
admitted when, for every limit, ``max(TAT, now) + cost * emission_us - now <= burst *
emission_us``; then (if ``consume``) every TAT moves to that value, else nothing changes — all
limits of one call are checked together and none is consumed unless all admit. A TAT in the
past means "idle", so its key expires when the TAT passes and an idle limiter leaves nothing.
The custom-client backends cannot do this atomically and raise ``CachifyInitError``.
Waiting rooms (``room_*``, ``rooms``): see the section "Waiting rooms" below. Backends with
``supports_waiting_room = False`` (the custom-client ones) raise
:class:`~cachify_core.errors.CachifyUnsupportedError` from every ``room_*`` mutation and report
empty rooms; a caller checks the flag first and falls back to backoff requeue there.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

__all__ = [
    "DEFAULT_HANDOVER_LEASE_MS",
    "DEFAULT_MAX_WAITING",
    "DEFAULT_STARTED_TTL_MS",
    "HANDOVER_BATCH",
    "AsyncBackend",
    "CacheRead",
    "Call",
    "Handover",
    "RateCheck",
    "RateLimit",
    "RoomAdmission",
    "RoomRelease",
    "RoomSettings",
    "RoomStats",
    "RoomStatus",
    "RoomSweep",
    "SyncBackend",
    "acall_each",
    "call_each",
]


class Call(NamedTuple):
    """One primitive call of a ``batch``: ``backend.<name>(*args)``."""

    name: str
    args: tuple[Any, ...]


def call_each(backend: object, calls: Sequence[Call]) -> list[Any]:
    """A ``batch`` made one call after the other (backends that cannot pipeline)."""
    return [getattr(backend, call.name)(*call.args) for call in calls]


async def acall_each(backend: object, calls: Sequence[Call]) -> list[Any]:
    """The asyncio twin of :func:`call_each`."""
    return [await getattr(backend, call.name)(*call.args) for call in calls]


class CacheRead(NamedTuple):
    """A cache lookup: the entry's payload (``None`` on a miss) and the namespace's counters.

    ``gen`` is handed back to ``cache_set`` so a result computed before a ``cache_clear`` is not
    stored after it; ``fill`` is the single-flight epoch (``cache_clear_fills`` moves it on).
    """

    value: bytes | None
    gen: str
    fill: str


class RateLimit(NamedTuple):
    """One limit of a rate check, as the backend sees it (GCRA)."""

    #: Suffix of the limit's state key: ``<key>:<name>``.
    name: str
    #: Microseconds between calls of cost 1 at the sustained rate (>= 1).
    emission_us: int
    #: Calls of cost 1 that may go at once from idle (>= 1).
    burst: int


class RateCheck(NamedTuple):
    """The outcome of a rate check (consuming or not)."""

    #: Every limit admits the call (and, if it consumed, the call is now counted).
    allowed: bool
    #: 0 if allowed; else milliseconds (rounded up) until every limit would admit it, unless
    #: other calls get in first.
    retry_after_ms: int
    #: Calls of cost 1 every limit would still admit right now (after this one, if consumed).
    remaining: int
    #: ``rate_acquire_bounds``: the index of the limiter that refused (the longest wait); -1
    #: when allowed. ``rate_acquire``: 0 when refused.
    refused: int = -1


# -- waiting rooms ---------------------------------------------------------------------------
#
# A pool's waiting room holds the deliveries that found the pool full, in arrival order, so each
# slot that frees goes to the longest-waiting one instead of to whoever retries first. It lives
# next to the pool's slots (Redis: under the pool's hash tag ``{<prefix><key>-pool}``) and is
# driven by the primitives below; every one is one atomic step (one round trip on Redis).
#
# Vocabulary:
#
# * an **entry** is ``(entry_id, payload)``: ``payload`` is opaque bytes (what the caller needs
#   to publish the delivery again); ``entry_id`` names this one park and must be unique per park
#   (e.g. ``new_token()``, or derived from the delivery: task id, retries and requeue count),
#   never reused for a later park of the same task: a ``room_acquire`` without a reservation
#   whose entry id is already parked is ``PARKED`` (it keeps its place: a retried call, or a
#   redelivery of the delivery that parked it); one whose entry id is handed over, claimed or
#   remembered as started is ``DUPLICATE`` (its task is on its way or ran: acknowledge, do not
#   run; nothing stored).
# * a **parked** entry waits for a slot (FIFO, ``room_acquire``); a **timed** entry waits for a
#   time (``room_park_until``, for rate limits).
# * a **hand-over** is an entry taken out of the waiting line and returned to a caller to
#   publish. A parked entry's hand-over **reserves** a slot of the pool for it: a slot member
#   named ``"#" + entry_id`` that counts as taken (``pool_size`` counts it, a newcomer cannot
#   take it) and ends ``slot_ttl_ms`` after the hand-over, like any slot, so a lost hand-over
#   frees its slot by then. A timed entry's hand-over reserves nothing.
# * every hand-over carries a **lease** of ``handover_lease_ms``: unless the delivery *arrives*
#   (``room_acquire`` with ``reservation=entry_id``, or ``room_arrive`` for a timed entry) within
#   it, ``room_sweep`` returns the payload again and renews the lease (so two sweepers do not
#   both re-publish within one lease). A reservation that runs out unclaimed (``slot_ttl_ms``
#   after the hand-over) frees its slot, and its entry goes back first in line under the same
#   id: it is handed over again when a slot frees, and a delivery of it that still arrives is
#   matched to it (it claims a free slot as that entry, or is acknowledged while the entry
#   keeps its place). A timed hand-over is republished every lease until claimed. So a lost
#   publish loses nothing; an entry whose delivery will not run is dropped with
#   ``room_cancel``.
# * an arrival **claims** the hand-over: the payload is deleted and the entry id is remembered
#   as claimed by the arriving delivery's token (its slot) for at least ``started_ttl_ms``, and
#   as long as that slot lives. A later arrival of the same id is a ``DUPLICATE`` (acknowledge,
#   do not run) in every case but one: if the claimer died unfinished (its slot ran out before
#   a ``room_release`` naming the claim), the store cannot have known it while the slot lived,
#   so the **first copy arriving while the claimer's slot lives is kept** as a *watcher*: dropped
#   when the claim finishes, put first in line (a timed one: due at once) when the claimer's
#   slot runs out first. A copy arriving after a dead claimer's slot ran out, with no watcher,
#   *takes the claim over* (it goes the normal way). So a duplicate publish never runs twice,
#   and a broker's redelivery of a killed run is never lost; it runs once more, at the latest
#   when the killed claimer's slot expires.
#
# The room's key ``K`` is the pool's full key (``"<prefix><key>-pool"``, as ``pool``/``pool_acquire``
# use it): the room's slots are the pool's. A room holding only timed entries (a rate limit's)
# needs a key of its own that nothing else uses (e.g. ``"<prefix><key>-rate-room"``): ``{K}``
# is always read as a slot set.
#
# A delivery's lifecycle over these calls: admission ``room_acquire`` (with the reservation its
# message carries, if any) -> run on ACQUIRED/CLAIMED, acknowledge on PARKED/DUPLICATE, back off
# on FULL; finish ``room_release``; publish every ``handed`` entry any call returns, at once, as a
# delivery carrying ``entry_id`` as its reservation. Each process runs ``room_sweep`` on the
# rooms ``rooms`` lists about once a second (:func:`cachify_core.rooms.start_sweeper`).
#
# What is stored, per pool key ``K`` (Redis key names; the memory backend keeps the same state
# in process memory, on its monotonic clock):
#
# =====================  ====================================================================
# ``{K}``                the pool's slots (existing): tokens and ``#<entry_id>`` reservations
# ``{K}:room``           parked entries, FIFO: entry id -> parked-at (server ms, made strictly
#                        increasing)
# ``{K}:timed``          timed entries: entry id -> due (server ms)
# ``{K}:parked``         entry id -> payload, for parked, timed and handed-over entries
# ``{K}:handed``         hand-overs: entry id -> lease end (server ms)
# ``{K}:until``          slot hand-overs: entry id -> end of the reservation (server ms)
# ``{K}:started``        claimed entry ids: entry id -> remembered until (server ms)
# ``{K}:conf``           the room's settings, for sweepers that know only the key
# ``{K}:claims``         claimed entry ids -> the claimer's token (``""``: finished, or replaced)
# ``{K}:watch``          claimed entry ids -> the copy watching the claim (payload in ``:parked``)
# ``{<registry>}``       the registry: rooms with parked, timed, watching or handed-over entries
# =====================  ====================================================================
#
# Lifetimes: nothing a room holds expires while it holds it (however long an entry waits);
# an empty room leaves only ``:started``/``:claims``, which expire with their last mark (and
# the claimer's lease). The registry lists a room while it has parked, timed, watching or
# handed-over entries. On a single Redis server (and the memory backend) every
# script keeps it exact, atomically; on Redis Cluster the registry is one key in its own hash
# slot, which a room's script cannot touch, so a park adds the room in a second command and
# ``room_sweep`` removes a drained room (a version check keeps a concurrent park's room listed):
# parks that add an entry cost 2 round trips there, and a stale listing costs one sweep.

#: Parked entries a room holds at most unless told otherwise (``RoomSettings.max_waiting``).
DEFAULT_MAX_WAITING = 100_000
#: Time a hand-over has to arrive before a sweep publishes it again: publish + broker transit +
#: a worker picking it up, with room to spare (a duplicate costs only its recognition).
DEFAULT_HANDOVER_LEASE_MS = 10_000
#: How long a claimed entry id is remembered (duplicates are published only while the hand-over
#: lives, at most ``slot_ttl_ms``; this leaves margin for a slow broker to deliver them).
DEFAULT_STARTED_TTL_MS = 600_000
#: Most hand-overs one ``room_acquire``/``room_release`` makes (more free slots wait for a sweep).
HANDOVER_BATCH = 64


def _positive_ms(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"waiting room: {what} must be a whole number of ms >= 1, got {value!r}")
    return value


def check_park_until(key: str, delay_ms: object, spacing_ms: object) -> None:
    """``room_park_until``'s arguments, checked the same way by every backend."""
    for name, value in (("delay_ms", delay_ms), ("spacing_ms", spacing_ms)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"room_park_until {key!r}: {name} must be an int >= 0, got {value!r}")


@dataclass(frozen=True)
class RoomSettings:
    """How one pool's waiting room behaves; validated here, before any I/O.

    ``registry`` is the registry key (one per key prefix, e.g. ``"<prefix>waiting-rooms"``);
    ``max_size`` the pool's slots (``room_acquire`` needs >= 1; a room holding only timed
    entries says 0); ``slot_ttl_ms`` the lease of a slot taken by
    ``room_acquire``, of a reservation, and the life of any hand-over; ``max_waiting`` the most
    parked entries (and, separately, the most timed entries) the room holds.
    """

    registry: str
    max_size: int
    slot_ttl_ms: int
    max_waiting: int = DEFAULT_MAX_WAITING
    handover_lease_ms: int = DEFAULT_HANDOVER_LEASE_MS
    started_ttl_ms: int = DEFAULT_STARTED_TTL_MS

    def __post_init__(self) -> None:
        if not isinstance(self.registry, str) or not self.registry:
            raise ValueError(f"waiting room: registry must be a non-empty str, got {self.registry!r}")
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int) or self.max_size < 0:
            raise ValueError(f"waiting room: max_size must be an int >= 0, got {self.max_size!r}")
        if (
            isinstance(self.max_waiting, bool)
            or not isinstance(self.max_waiting, int)
            or self.max_waiting < 0
        ):
            raise ValueError(f"waiting room: max_waiting must be an int >= 0, got {self.max_waiting!r}")
        _positive_ms(self.slot_ttl_ms, "slot_ttl_ms")
        _positive_ms(self.handover_lease_ms, "handover_lease_ms")
        _positive_ms(self.started_ttl_ms, "started_ttl_ms")


class RoomStatus(enum.Enum):
    """What a ``room_acquire`` (or ``room_park_until`` / ``room_arrive``) did."""

    ACQUIRED = "acquired"  #: the token holds a slot (the pool had one free and nobody waited)
    CLAIMED = "claimed"  #: the reservation became the token's slot (or the timed entry arrived)
    DUPLICATE = "duplicate"  #: a claimed reservation, or an entry id already known: acknowledge, do not run
    PARKED = "parked"  #: the entry waits in the room (it was parked now, or already was)
    FULL = "full"  #: the room holds ``max_waiting`` entries: nothing was parked
    UNKNOWN = "unknown"  #: ``room_arrive``: no hand-over of that id (cancelled, or never made)
    #: ``room_arrive``: the entry's claimer died or passed its claim on unfinished (a requeue);
    #: the token holds the claim now, as the claimer's successor
    TAKEN_OVER = "taken over"


class Handover(NamedTuple):
    """An entry to publish now: its id (what the published delivery carries as its
    reservation) and the payload it was parked with."""

    entry_id: str
    payload: bytes


class RoomAdmission(NamedTuple):
    """``status``, and hand-overs the same call made (publish each of them whatever ``status``)."""

    status: RoomStatus
    handed: tuple[Handover, ...] = ()


class RoomRelease(NamedTuple):
    """``released``: the token held a live slot (``False``: it had expired, or was never taken —
    the same meaning as ``pool_release``); ``handed``: entries to publish now."""

    released: bool
    handed: tuple[Handover, ...] = ()


class RoomSweep(NamedTuple):
    """``handed``: entries to publish now; ``remaining``: entries the room still holds (parked +
    timed + handed over); 0 means it drained and left the registry; ``next_due_s``: seconds
    until its earliest timed entry is due (``None``: it has none), so a sweeper can wake then."""

    handed: tuple[Handover, ...]
    remaining: int
    next_due_s: float | None = None


class RoomStats(NamedTuple):
    """A waiting room right now: ``parked`` entries waiting for a slot, how long the oldest of
    them has waited (``oldest_wait_s``, 0.0 if none), live hand-overs not yet arrived
    (``handed``, each holding a reserved slot if it came from the FIFO line), ``timed``
    entries not yet due, and copies ``watching`` a running claim."""

    parked: int
    oldest_wait_s: float
    handed: int
    timed: int
    watching: int = 0


class SyncBackend(Protocol):
    #: Human-readable server or store name, used in error messages and logs.
    name: str

    # Cache entries live in namespaces (one per cached function: "<prefix><template>-cached"),
    # so a whole function's cache clears in one operation, without scanning keys.
    def cache_get(self, ns: str, key: str) -> CacheRead:
        """The entry ``key`` of namespace ``ns`` if it belongs to the current generation."""
        ...

    def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> bool:
        """Store the entry unless ``ns`` was cleared since generation ``gen`` was read."""
        ...

    def cache_delete(self, ns: str, key: str) -> bool:
        """Delete one entry; whether it existed."""
        ...

    def cache_clear(self, ns: str) -> None:
        """Invalidate every entry of ``ns`` (moves its generation on; O(1))."""
        ...

    def cache_clear_fills(self, ns: str) -> None:
        """Move the single-flight epoch on: new misses stop waiting for computations in flight."""
        ...

    def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> bool:
        """Take ``key`` for ``token`` if nobody holds it."""
        ...

    def lock_release(self, key: str, token: str) -> bool:
        """Delete ``key`` only if ``token`` holds it (compare-and-delete); wakes one waiter."""
        ...

    def lock_extend(self, key: str, token: str, ttl_ms: int | None) -> bool:
        """Set the remaining lifetime of a lock ``token`` still holds; ``False`` if it does not.
        ``None``: no expiry from now on (the hold of a task parked in a waiting room, which
        gets its lifetime back when it is handed over)."""
        ...

    def lock_holder(self, key: str) -> str | None:
        """The token holding ``key``, or ``None``."""
        ...

    def lock_force_release(self, key: str) -> bool:
        """Delete lock ``key`` whoever holds it (an operator's tool); wakes one waiter."""
        ...

    def pool_acquire(self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float) -> bool:
        """Lease one of ``max_size`` slots of pool ``key`` for ``token``; expired leases are pruned first.

        A ``token`` that already holds a live slot keeps it and gets a fresh lease (so a token
        derived from a delivery lets its redelivery take over a dead run's slot). Custom-client
        backends do not guarantee this."""
        ...

    def pool_release(self, key: str, token: str) -> bool:
        """Give back ``token``'s slot; ``False`` if it held none (expired or never taken)."""
        ...

    def pool_extend(self, key: str, token: str, ttl_ms: int) -> bool:
        """Renew ``token``'s slot lease; ``False`` if it holds none."""
        ...

    def pool_size(self, key: str) -> int:
        """Live (unexpired) slots of pool ``key``."""
        ...

    def rate_acquire(self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool) -> RateCheck:
        """GCRA check of every limit of ``key`` for a call of weight ``cost`` (see the module
        docstring); with ``consume``, admit it by moving every limit's TAT on, all or nothing."""
        ...

    def rate_acquire_bounds(
        self, bounds: Sequence[tuple[str, Sequence[RateLimit]]], cost: int, consume: bool
    ) -> RateCheck:
        """``rate_acquire`` of several limiters ``(key, limits)`` for one call: it is admitted
        only if every one admits it. On memory and a single Redis server one atomic call (with
        ``consume``, none counts it unless all admit it); on Redis Cluster, whose limiters may
        live on different nodes, one call per limiter in order, up to the first refusal (the
        limiters before it have counted the call). ``refused``: which limiter refused."""
        ...

    def wait(self, key: str, timeout_s: float) -> bool:
        """Block until a release of ``key`` signals a registered waiter (True) or ``timeout_s`` passes."""
        ...

    # -- waiting rooms (see the section above) ----------------------------------------------
    #: ``False``: this backend cannot park atomically; ``room_*`` mutations raise.
    supports_waiting_room: bool

    @property
    def pipelines(self) -> bool:
        """Whether ``batch`` makes its calls in one round trip (a single Redis server)."""
        ...

    def room_acquire(
        self,
        key: str,
        token: str,
        entry_id: str,
        payload: bytes,
        room: RoomSettings,
        reservation: str | None = None,
    ) -> RoomAdmission:
        """Take a slot of pool ``key`` for ``token``, or park ``(entry_id, payload)``: one atomic step.

        In order: expired slots, reservations and claims are pruned. With ``reservation`` (the
        entry id a handed-over delivery carries): if ``token`` claimed that id and its slot lives
        -> ``CLAIMED`` again (lease renewed: the same delivery asking after a lost reply); else if that id was claimed -> ``DUPLICATE``, except
        that the first copy arriving while the claimer's slot lives is kept as its watcher (see
        the section above: ``entry_id``/``payload`` are what is kept), and that a copy arriving
        after a dead claimer's slot ran out takes the claim over and goes on as below; if its
        reservation is live it becomes ``token``'s slot (lease ``slot_ttl_ms`` from now), its
        payload is deleted, ``token`` is recorded as its claimer -> ``CLAIMED``; if its entry is
        back in line (the reservation ran out unclaimed) it takes a free slot as that entry when
        it is first in line (``CLAIMED``), else it stays there (``PARKED``: acknowledge);
        otherwise (cancelled, or never made) the call goes on as if it had no reservation. End a claimed run with
        ``room_release(..., claimed=reservation)``. Then free slots go to the oldest parked entries first (reserved, returned in
        ``handed``, at most :data:`HANDOVER_BATCH`); if ``entry_id`` is already parked ->
        ``PARKED`` (a retried call); if ``token`` holds a live slot (no reservation) it keeps it, lease
        renewed -> ``ACQUIRED`` (as ``pool_acquire``); if a slot is still free, nobody waits and it is leased to
        ``token`` -> ``ACQUIRED``; else the entry is parked at the tail -> ``PARKED``, unless the
        room holds ``max_waiting`` parked entries -> ``FULL`` (nothing stored). ``PARKED``
        writes the room's settings (``:conf``) and lists the room in the registry.
        """
        ...

    def room_release(
        self, key: str, token: str, room: RoomSettings, claimed: str | None = None
    ) -> RoomRelease:
        """Give back ``token``'s slot (owner-checked, as ``pool_release``) and hand the free
        slots (this one and any freed by expiry) to the oldest parked entries, reserving them:
        their payloads come back in ``handed`` for the caller to publish at once. With nobody
        parked it wakes a blocking ``pool()`` waiter, as ``pool_release`` does.

        ``claimed``: the reservation this run claimed (``room_acquire``/``room_arrive``), if
        any: the claim is finished, later copies of it are duplicates and the copy watching it
        is dropped. Leave it out for a run that claimed nothing, and for a run that ends in a
        framework retry whose message still carries the reservation (that retry must not be
        taken for a duplicate: without ``claimed`` it takes the claim over when it arrives;
        better still, the retry's message drops the reservation). ``room.max_size`` may be 0
        here (a timed room's claim lease)."""
        ...

    def room_cancel(self, key: str, entry_id: str, room: RoomSettings) -> RoomRelease:
        """Drop entry ``entry_id`` (parked, timed or handed over) whose delivery will not run (a
        cache hit, a drop, an error before the run): its payload is deleted and its reservation
        freed, and the free slots go to the oldest parked entries (``handed``, to publish).
        ``released``: the room held the entry. Without it, an unclaimed hand-over keeps coming
        back (that is what makes a lost publish lose nothing)."""
        ...

    def room_park_until(
        self, key: str, entry_id: str, payload: bytes, delay_ms: int, room: RoomSettings, spacing_ms: int = 0
    ) -> RoomAdmission:
        """Park a timed entry, due ``delay_ms`` (>= 0) after now on the store's clock, and no
        sooner than ``spacing_ms`` (>= 0) after the room's latest timed entry (entries waiting for
        the same limit then come back one by one, at about the rate it admits them); the first
        ``room_sweep`` at or after that time returns it (never earlier), as a hand-over without a
        reservation. ``PARKED`` (or already parked: its due time is kept), or ``FULL`` when the
        room holds ``max_waiting`` timed entries. Parked entries waiting for slots are not
        affected, and timed ones never take slots."""
        ...

    def room_arrive(
        self, key: str, token: str, entry_id: str, payload: bytes, room: RoomSettings, reservation: str
    ) -> RoomStatus:
        """A delivery of timed entry ``reservation``'s hand-over arrived: ``CLAIMED`` (payload
        deleted; ``token`` holds the claim as a lease of ``slot_ttl_ms`` in this room's slot
        set: renew it with ``pool_extend``, end it with ``room_release(key, token, room,
        claimed=reservation)``), ``TAKEN_OVER`` (the same, as the successor of a claimer that
        died or passed the claim on unfinished), ``DUPLICATE`` (claimed before: the claim runs or finished; the
        first copy arriving while it runs is kept as ``(entry_id, payload)`` and is due at once
        if the claimer dies unfinished), or ``UNKNOWN`` (no such hand-over: cancelled, or never
        made; go on as a new delivery)."""
        ...

    def room_sweep(self, key: str, registry: str, limit: int) -> RoomSweep:
        """Move room ``key`` on without a release, with the settings its last park stored:
        free slots (a dead holder's, expired) go to the oldest parked entries (one whose
        reservation ran out unclaimed is first again); hand-overs whose lease has passed are
        returned again and their lease renewed; timed entries now due are handed over; copies
        watching a claim whose claimer died go first in line. At most ``limit`` (>= 1) of each
        kind per call."""
        ...

    def room_stats(self, key: str) -> RoomStats:
        """What room ``key`` holds right now (read-only)."""
        ...

    def rooms(self, registry: str) -> tuple[str, ...]:
        """The pool keys ``registry`` lists: rooms with parked, timed or handed-over entries
        (one read; empty while nothing waits anywhere)."""
        ...

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        """Make ``calls`` (primitive calls that do not depend on each other) and return their
        results in order: in one round trip on a single Redis server, one after the other on
        Redis Cluster and the other backends. A call that raises raises out of the batch (the
        others may have happened: each is atomic on its own, the batch is not)."""
        ...


class AsyncBackend(Protocol):
    name: str

    async def cache_get(self, ns: str, key: str) -> CacheRead: ...

    async def cache_set(self, ns: str, key: str, value: bytes, ttl_ms: int | None, gen: str) -> bool: ...

    async def cache_delete(self, ns: str, key: str) -> bool: ...

    async def cache_clear(self, ns: str) -> None: ...

    async def cache_clear_fills(self, ns: str) -> None: ...

    async def lock_acquire(self, key: str, token: str, ttl_ms: int | None, waiting: float) -> bool: ...

    async def lock_release(self, key: str, token: str) -> bool: ...

    async def lock_extend(self, key: str, token: str, ttl_ms: int | None) -> bool: ...

    async def lock_holder(self, key: str) -> str | None: ...

    async def lock_force_release(self, key: str) -> bool: ...

    async def pool_acquire(
        self, key: str, token: str, max_size: int, ttl_ms: int | None, waiting: float
    ) -> bool: ...

    async def pool_release(self, key: str, token: str) -> bool: ...

    async def pool_extend(self, key: str, token: str, ttl_ms: int) -> bool: ...

    async def pool_size(self, key: str) -> int: ...

    async def rate_acquire(
        self, key: str, limits: Sequence[RateLimit], cost: int, consume: bool
    ) -> RateCheck: ...

    async def rate_acquire_bounds(
        self, bounds: Sequence[tuple[str, Sequence[RateLimit]]], cost: int, consume: bool
    ) -> RateCheck: ...

    async def wait(self, key: str, timeout_s: float) -> bool: ...

    supports_waiting_room: bool

    @property
    def pipelines(self) -> bool: ...

    async def room_acquire(
        self,
        key: str,
        token: str,
        entry_id: str,
        payload: bytes,
        room: RoomSettings,
        reservation: str | None = None,
    ) -> RoomAdmission: ...

    async def room_release(
        self, key: str, token: str, room: RoomSettings, claimed: str | None = None
    ) -> RoomRelease: ...

    async def room_cancel(self, key: str, entry_id: str, room: RoomSettings) -> RoomRelease: ...

    async def room_park_until(
        self, key: str, entry_id: str, payload: bytes, delay_ms: int, room: RoomSettings, spacing_ms: int = 0
    ) -> RoomAdmission: ...

    async def room_arrive(
        self, key: str, token: str, entry_id: str, payload: bytes, room: RoomSettings, reservation: str
    ) -> RoomStatus: ...

    async def room_sweep(self, key: str, registry: str, limit: int) -> RoomSweep: ...

    async def room_stats(self, key: str) -> RoomStats: ...

    async def rooms(self, registry: str) -> tuple[str, ...]: ...

    async def batch(self, calls: Sequence[Call]) -> list[Any]: ...
