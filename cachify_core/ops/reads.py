"""What the store holds right now, as plain typed records (read-only; no UI here).

Each read scans the prefix's keys on every master (:meth:`Store.scan`), then reads the keys it
found in one pipeline per master, and compares times with that master's own clock (``TIME``),
the clock cachify's scripts wrote them with. Nothing is written, not even a prune: a slot whose
lease has passed is reported as ``expired``, as ``pool_size`` skips it.

What the store does not record is not reported: a lock or slot does not carry the time it was
taken (only its remaining lifetime), so there is no "age" of a hold; a pool's ``max_size`` is
stored only by its waiting room (``:conf``, kept while the room holds entries), so it is
``None`` (unknown) otherwise; a rate limit's state is its theoretical arrival time (TAT) alone,
its key names the rate (so the emission interval is exact) but not the burst, which is taken to
be the rate's count (the library's default) unless the caller says otherwise.

Names: ``key`` is the stored Redis key (``{PYC-sync-42-once}``); ``name`` the key as the
application formats it (``sync-42``): what a PATTERN is matched against (``fnmatch`` globs).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..backends.base import RoomStats
from ..rates import Rate
from .store import Node, Store, glob_escape, split_key, tag_key, untag

__all__ = [
    "NO_EXPIRY_MS",
    "ROOM_SUFFIXES",
    "CacheStats",
    "Hold",
    "Limit",
    "Pool",
    "Room",
    "Slot",
    "cache_namespace",
    "cache_namespaces",
    "cache_stats",
    "holds",
    "limits",
    "pools",
]

#: A slot's score when it was leased without expiry (2^52 ms, as pool_acquire.lua).
NO_EXPIRY_MS = 4503599627370496
#: Companions of a pool key that only its waiting room writes (backends/base.py, "Waiting rooms").
ROOM_SUFFIXES = (":room", ":timed", ":parked", ":handed", ":until", ":started", ":conf", ":claims", ":watch")

_HOLD_KINDS = ("lock", "once")
_FILL = re.compile(r"^(?P<entry>.*)-cached-fill(?P<epoch>\d+)$")
_RATE_LIMIT = re.compile(r"^:(?P<count>\d+)/(?P<period>\d+)ms$")


@dataclass(frozen=True)
class Hold:
    """A lock (``lock``), a run-once hold (``once``: ``@once`` or a task's ``once_key``) or a
    cached function's single-flight fill lock (``fill``)."""

    key: str  #: the stored key, ``{PYC-sync-42-once}``
    kind: str  #: ``"lock"``, ``"once"`` or ``"fill"``
    name: str  #: ``sync-42`` (a fill lock: the entry's key, ``report-mon``)
    holder: str  #: the owner token (``host:pid:random:counter``) or the task id holding it
    ttl_ms: int | None  #: remaining lifetime; ``None``: no expiry
    waiters: bool  #: someone waits for its release (its ``:waiting`` mark is live)
    node: str  #: the master it lives on


@dataclass(frozen=True)
class Slot:
    """One member of a pool's slot set."""

    holder: str  #: the owner token (a task's slot: the token derived from its delivery), or ``#<entry id>``
    reserved: bool  #: a waiting room's reservation for a hand-over on its way (``#<entry id>``)
    lease_ms: int | None  #: remaining lease; ``None``: leased without expiry


@dataclass(frozen=True)
class Room:
    """A pool's waiting room (:class:`~cachify_core.backends.base.RoomStats`, read by ``room_stats``)."""

    parked: int  #: deliveries waiting for a slot
    oldest_wait_s: float  #: how long the longest-waiting of them has waited (0.0 if none)
    handed: int  #: hand-overs published but not yet arrived
    timed: int  #: entries waiting for a time (rate limits), not yet due
    watching: int  #: copies watching a running claim

    @classmethod
    def of(cls, stats: RoomStats) -> Room:
        return cls(stats.parked, stats.oldest_wait_s, stats.handed, stats.timed, stats.watching)


@dataclass(frozen=True)
class Pool:
    """A concurrency pool (``pool``, ``@pooled``, a task's ``pool_key``) and its waiting room."""

    key: str  #: the stored slot set, ``{PYC-stripe-pool}``
    name: str  #: ``stripe``
    in_use: int  #: live slots (reservations included), what ``pool(...).size()`` counts
    max_size: int | None  #: from the waiting room's ``:conf``; ``None``: not stored (unknown)
    slots: tuple[Slot, ...]  #: the live slots, the soonest lease end first
    expired: int  #: members whose lease has passed, not pruned yet (they count for nobody)
    waiters: bool  #: a blocking ``pool()`` caller waits for a slot (``:waiting`` is live)
    room: Room | None  #: its waiting room, if it has one right now
    node: str


@dataclass(frozen=True)
class Limit:
    """One limit of a rate limiter (``rate_limit``, ``@rate_limited``), read from its TAT."""

    key: str  #: ``{PYC-api-rate}:10/1000ms``
    name: str  #: the limiter's key, ``api``
    rate: str  #: ``10/s``
    emission_us: int  #: µs between calls at the sustained rate (from the rate in the key)
    burst: int  #: calls of cost 1 that may go at once from idle
    burst_assumed: bool  #: ``burst`` is the rate's count (the default), not a stored value
    tat_us: int  #: the stored theoretical arrival time, the server's Unix µs
    backlog_us: int  #: ``tat_us`` minus now (> 0: calls are spaced out; 0: idle)
    remaining: int  #: calls of cost 1 it would admit right now (if ``burst`` is right)
    next_allowed_ms: int  #: ms until a call of cost 1 is admitted (0: now)
    ttl_ms: int | None  #: the key's remaining life (it expires at its TAT)
    node: str


@dataclass(frozen=True)
class CacheStats:
    """One cached function's namespace (``@cached(template)``, a task's ``cache_key``)."""

    namespace: str  #: ``PYC-report-{day}-cached``
    generation: int  #: ``clear_cache()`` moves it on; older entries read as misses
    fill_epoch: int  #: ``clear_being_calculated()`` moves it on
    entries: int  #: stored entries of the current generation (hits)
    stale: int  #: stored entries of older generations (misses, left to their TTL)
    node: str


def _matcher(pattern: str) -> Any:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern must be a non-empty glob such as 'sync-*', got {pattern!r}")
    return lambda name: fnmatch.fnmatchcase(name, pattern)


def _server_glob(pattern: str) -> str:
    # The pattern is matched here (fnmatch); the server only filters what it sends, so give
    # it the pattern only where Redis globs and fnmatch agree (no classes, no escapes).
    return pattern if not re.search(r"[\[\]\\]", pattern) else "*"


def _scan(store: Store, pattern: str) -> dict[str, tuple[Node, set[str]]]:
    """node name -> (node, stored keys of the prefix whose name may match ``pattern``)."""
    match = store.prefix_match(_server_glob(pattern)) + "*"
    found: dict[str, tuple[Node, set[str]]] = {}
    for node in store.nodes():
        found[node.name] = (node, set(node.scan(match)))
    return found


def _name(store: Store, full: str, postfix: str) -> str | None:
    if not full.startswith(store.prefix) or not full.endswith(postfix):
        return None
    return full[len(store.prefix) : len(full) - len(postfix)]


def _ttl(pttl: Any) -> int | None:
    return None if int(pttl) == -1 else int(pttl)


def _pipeline(node: Node, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
    pipe = node.client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(pipe.execute(raise_on_error=False))


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)


def holds(store: Store, pattern: str = "*") -> list[Hold]:
    """Every lock, run-once hold and fill lock of the prefix whose name matches ``pattern``."""
    matches = _matcher(pattern)
    out: list[Hold] = []
    for node, keys in _scan(store, pattern).values():
        found: list[tuple[str, str, str, bool]] = []  # stored key, kind, name, waiters
        for stored in keys:
            parts = split_key(stored)
            if parts is None or parts[1]:
                continue
            full = parts[0]
            kind = name = None
            for candidate in _HOLD_KINDS:
                name = _name(store, full, f"-{candidate}")
                if name is not None:
                    kind = candidate
                    break
            if kind is None:
                fill = _FILL.match(full)
                name = _name(store, fill.group("entry"), "") if fill else None
                kind = "fill" if name is not None else None
            if kind is None or name is None or not matches(name):
                continue
            found.append((stored, kind, name, stored + ":waiting" in keys))
        replies = _pipeline(node, [c for s, *_ in found for c in (("GET", s), ("PTTL", s))])
        for i, (stored, kind, name, waiters) in enumerate(found):
            holder, pttl = replies[2 * i], replies[2 * i + 1]
            if holder is None or isinstance(holder, Exception) or isinstance(pttl, Exception):
                continue  # released between the scan and the read, or not a string
            out.append(Hold(stored, kind, name, _text(holder), _ttl(pttl), waiters, node.name))
    return sorted(out, key=lambda h: (h.name, h.kind))


def _max_size(conf: Any) -> int | None:
    if conf is None or isinstance(conf, Exception):
        return None
    head = _text(conf).split(":", 1)[0]
    return int(head) if head.isdigit() else None


def _score_pairs(reply: Any) -> list[tuple[str, float]]:
    """ZRANGE ... WITHSCORES as (member, score), whether the client paired them or not."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(_text(m), float(sc)) for m, sc in reply]
    return [(_text(reply[j]), float(reply[j + 1])) for j in range(0, len(reply), 2)]


def pools(store: Store, pattern: str = "*") -> list[Pool]:
    """Every pool (and room-only waiting room) of the prefix whose name matches ``pattern``."""
    matches = _matcher(pattern)
    out: list[Pool] = []
    for node, keys in _scan(store, pattern).values():
        found: dict[str, str] = {}  # full key -> name
        roomy_keys: set[str] = set()  # full keys with waiting-room companions
        for stored in keys:
            parts = split_key(stored)
            if parts is None:
                continue
            full, suffix = parts
            name = _name(store, full, "-pool")
            roomy = suffix in ROOM_SUFFIXES
            if name is None and roomy:
                name = _name(store, full, "")  # a room of its own (a rate limit's timed entries)
            if name is None or not (suffix == "" or roomy or suffix in (":waiting", ":wake")):
                continue
            if matches(name):
                found[full] = name
                if roomy:
                    roomy_keys.add(full)
        commands: list[tuple[Any, ...]] = []
        for full in found:
            tag = tag_key(full)
            commands += [
                ("ZRANGE", tag, 0, -1, "WITHSCORES"),
                ("GET", tag + ":conf"),
                ("PTTL", tag + ":waiting"),
            ]
        replies = _pipeline(node, commands)
        now_ms = node.time_ms()
        for i, (full, name) in enumerate(found.items()):
            members, conf, waiting = replies[3 * i : 3 * i + 3]
            if isinstance(members, Exception):
                members = []  # the slot key is not a sorted set: not cachify's
            pairs = _score_pairs(members)
            live = [(m, s) for m, s in pairs if s > now_ms]
            slots = tuple(
                Slot(m, m.startswith("#"), None if s >= NO_EXPIRY_MS else int(s) - now_ms)
                for m, s in sorted(live, key=lambda p: p[1])
            )
            room = Room.of(store.backend.room_stats(full)) if full in roomy_keys else None
            if not (slots or room or len(pairs)):
                continue  # only a lapsing :waiting/:wake pair: nothing to show
            waiters = not isinstance(waiting, Exception) and int(waiting) > 0
            out.append(
                Pool(
                    key=tag_key(full),
                    name=name,
                    in_use=len(live),
                    max_size=_max_size(conf),
                    slots=slots,
                    expired=len(pairs) - len(live),
                    waiters=waiters,
                    room=room,
                    node=node.name,
                )
            )
    return sorted(out, key=lambda p: p.name)


def limits(store: Store, pattern: str = "*", burst: int | None = None) -> list[Limit]:
    """Every rate limit state of the prefix whose limiter name matches ``pattern``.

    ``burst``: the burst the limiters were declared with (``None``: each rate's count, the
    library's default); it is not stored, and ``remaining``/``next_allowed_ms`` depend on it."""
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
        raise ValueError(f"burst must be an int >= 1 or None, got {burst!r}")
    matches = _matcher(pattern)
    out: list[Limit] = []
    for node, keys in _scan(store, pattern).values():
        found: list[tuple[str, str, Rate]] = []
        for stored in keys:
            parts = split_key(stored)
            limit = _RATE_LIMIT.match(parts[1]) if parts else None
            name = _name(store, parts[0], "-rate") if parts and limit else None
            if limit is None or name is None or not matches(name):
                continue
            count, period = int(limit.group("count")), int(limit.group("period"))
            if count >= 1 and period >= 1:
                found.append((stored, name, Rate(count, period)))
        replies = _pipeline(node, [c for s, *_ in found for c in (("GET", s), ("PTTL", s))])
        now_us = node.time_us()
        for i, (stored, name, rate) in enumerate(found):
            raw, pttl = replies[2 * i], replies[2 * i + 1]
            if raw is None or isinstance(raw, Exception) or isinstance(pttl, Exception):
                continue
            try:
                tat = int(float(_text(raw)))
            except ValueError:
                continue
            e = rate.emission_us
            b = rate.count if burst is None else burst
            backlog = max(0, tat - now_us)
            remaining = max(0, (b * e - backlog) // e)
            wait_us = max(0, backlog - (b - 1) * e)  # admitted when backlog <= (burst - 1) * emission
            out.append(
                Limit(
                    key=stored,
                    name=name,
                    rate=str(rate),
                    emission_us=e,
                    burst=b,
                    burst_assumed=burst is None,
                    tat_us=tat,
                    backlog_us=backlog,
                    remaining=remaining,
                    next_allowed_ms=-(-wait_us // 1000),
                    ttl_ms=_ttl(pttl),
                    node=node.name,
                )
            )
    return sorted(out, key=lambda lim: (lim.name, lim.key))


def cache_namespace(store: Store, template: str) -> str:
    """The namespace of ``@cached(template)`` under the store's prefix; a stored tag
    (``{PYC-report-{day}-cached}``) or a full namespace is taken as it is."""
    if not isinstance(template, str) or not template:
        raise ValueError(
            f"a cache namespace is the @cached key template, e.g. 'report-{{day}}', got {template!r}"
        )
    if template.startswith("{") and template.endswith("-cached}"):
        return template[1:-1]
    if template.startswith(store.prefix) and template.endswith("-cached"):
        return template
    return f"{store.prefix}{template}-cached"


def cache_stats(store: Store, template: str) -> CacheStats:
    """Generation, fill epoch and stored entries of one cached function's namespace."""
    ns = cache_namespace(store, template)
    tag = tag_key(ns)
    node = store.node_of(tag + ":gen")
    gen_raw, fill_raw = _pipeline(node, [("GET", tag + ":gen"), ("GET", tag + ":fill")])
    gen = 0 if gen_raw is None else int(_text(gen_raw))
    fill = 0 if fill_raw is None else int(_text(fill_raw))
    entries = [k for k in set(node.scan(glob_escape(tag) + ":*")) if k not in (tag + ":gen", tag + ":fill")]
    head = f"{gen}:".encode()
    replies = _pipeline(node, [("GETRANGE", k, 0, len(head) - 1) for k in entries])
    current = sum(1 for r in replies if isinstance(r, bytes) and r == head)
    stale = sum(1 for r in replies if isinstance(r, bytes) and r and r != head)
    return CacheStats(ns, gen, fill, current, stale, node.name)


_CACHE_TAG_END = "-cached}:"


def cache_namespaces(store: Store, pattern: str = "*") -> list[str]:
    """The namespaces (``PYC-report-{day}-cached``) that hold an entry or a generation under the
    store's prefix, whose template (``report-{day}``) matches ``pattern``: what to pass to
    :func:`cache_stats`. One SCAN of the prefix on every master."""
    matches = _matcher(pattern)
    found: set[str] = set()
    for node in store.nodes():
        for stored in node.scan(store.prefix_match("*")):
            end = stored.find(_CACHE_TAG_END) if stored.startswith("{") else -1
            if end < 0:
                continue
            ns = untag(stored[: end + len(_CACHE_TAG_END) - 1])
            template = _name(store, ns, "-cached")
            if template and matches(template):
                found.add(ns)
    return sorted(found)
