"""What the dashboard shows, built from :mod:`cachify_core.ops` alone (no HTTP, no third-party
import): one :class:`Snapshot` per tick, the pools' occupancy history for the sparklines, the
cache hit rates of an active metrics recorder, and who may connect (:func:`check_bind`).

A tick reads what ``cachify top`` reads (a SCAN of the prefix on every master for pools, holds,
limits and cache namespaces, then one pipeline per master) plus one SCAN per cache namespace
shown (``cache_stats``); nothing is written.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import ops

__all__ = [
    "LOOPBACK_NAMES",
    "Collector",
    "History",
    "Snapshot",
    "check_bind",
    "is_loopback",
    "metrics_hits",
    "session_nonce",
]

#: Host names that always mean this machine (besides the 127.0.0.0/8 and ::1 literals).
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """``host`` (an address literal or ``localhost``) is this machine only. A name that has to
    be resolved counts as not loopback: what it resolves to can change."""
    text = host.strip().lower()
    if text in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(text.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse (``ValueError``, naming the fix) a bind other machines can reach without a token."""
    if token is not None and len(token) < 16:
        raise ValueError(
            "the dashboard token is too short: use at least 16 random characters, e.g. "
            "CACHIFY_DASHBOARD_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to serve the dashboard on {host!r} without a token: any machine that reaches "
            "it could read every key (and, with --allow-writes, release holds). Pass --token T "
            "(or set CACHIFY_DASHBOARD_TOKEN), or bind loopback (--host 127.0.0.1)"
        )


def session_nonce(secret: bytes, session: str) -> str:
    """The per-session nonce a write must send (``X-Cachify-Nonce``): an HMAC of the session
    cookie, so the server keeps no table of them and another site cannot guess one."""
    return hmac.new(secret, session.encode(), hashlib.sha256).hexdigest()


def metrics_hits(prefix: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """``(mode, namespace -> (hits, misses))`` from the metrics recorder active in this process.

    ``mode``: ``"off"`` (no recorder: the dashboard runs in its own process, or metrics were
    never enabled), ``"prometheus"`` (counts read from it), or ``"otel"`` (on, but the
    OpenTelemetry API has no way to read a counter back: see its exporter)."""
    from ..metrics import _recorders, events

    if events.sink is None or not _recorders:
        return "off", {}
    for recorder in _recorders:
        totals = getattr(recorder, "totals", None)
        if totals is None:
            continue
        hits, misses = totals("cache_hit"), totals("cache_miss")
        out: dict[str, tuple[int, int]] = {}
        for template in set(hits) | set(misses):
            out[f"{prefix}{template}-cached"] = (int(hits.get(template, 0)), int(misses.get(template, 0)))
        return "prometheus", out
    return "otel", {}


class History:
    """Samples ``(time, slots in use, entries parked)`` of each pool over the last ``window_s``
    seconds, in this process's
    memory (lost on restart). A pool not seen for ``window_s`` is dropped; at most
    ``max_pools`` pools are kept (the least recently seen dropped first)."""

    def __init__(self, window_s: float = 300.0, max_pools: int = 200) -> None:
        self.window_s = window_s
        self.max_pools = max_pools
        self._series: OrderedDict[str, deque[tuple[float, int, int]]] = OrderedDict()

    def add(self, now_s: float, pools: list[ops.Pool]) -> None:
        seen = {p.key for p in pools}
        for p in pools:
            series = self._series.get(p.key)
            if series is None:
                series = self._series[p.key] = deque()
            self._series.move_to_end(p.key)
            series.append((now_s, p.in_use, p.room.parked if p.room else 0))
        for key in list(self._series):
            series = self._series[key]
            if key not in seen:
                series.append((now_s, 0, 0))  # gone from the store: nothing in use
            while series and series[0][0] < now_s - self.window_s:
                series.popleft()
            if not series or all(n == 0 and w == 0 for _, n, w in series):
                del self._series[key]
        while len(self._series) > self.max_pools:
            self._series.popitem(last=False)

    def series(self, key: str) -> list[tuple[float, int, int]]:
        return list(self._series.get(key, ()))


@dataclass
class Snapshot:
    """One tick's reading, JSON-ready through :meth:`view`."""

    server: str
    prefix: str
    time_s: float
    writes: bool
    error: str | None = None
    pools: list[dict[str, Any]] = field(default_factory=list)
    holds: list[ops.Hold] = field(default_factory=list)
    limits: list[dict[str, Any]] = field(default_factory=list)
    caches: list[dict[str, Any]] = field(default_factory=list)
    metrics: str = "off"
    read_ms: float = 0.0
    history_s: float = 300.0

    def view(self, pattern: str = "*", max_holds: int = 500) -> dict[str, Any]:
        """What one page gets: everything, holds narrowed to names matching ``pattern`` (a glob,
        as ``cachify holds``) and to the first ``max_holds``."""
        holds = [h for h in self.holds if fnmatch.fnmatchcase(h.name, pattern)]
        return {
            "server": self.server,
            "prefix": self.prefix,
            "time_s": self.time_s,
            "writes": self.writes,
            "error": self.error,
            "read_ms": round(self.read_ms, 1),
            "history_s": self.history_s,
            "pools": self.pools,
            "holds": [asdict(h) for h in holds[:max_holds]],
            "holds_matching": len(holds),
            "holds_total": len(self.holds),
            "pattern": pattern,
            "limits": self.limits,
            "caches": self.caches,
            "metrics": self.metrics,
        }


class Collector:
    """Reads the store through :mod:`cachify_core.ops` once per :meth:`collect` (called from one
    thread at a time) and keeps the occupancy history."""

    def __init__(
        self,
        store: ops.Store,
        *,
        writes: bool = False,
        history_s: float = 300.0,
        max_caches: int = 50,
        burst: int | None = None,
    ) -> None:
        self.store = store
        self.writes = writes
        self.history = History(history_s)
        self.max_caches = max_caches
        self.burst = burst
        self._lock = threading.Lock()
        #: A pool's size as its waiting room last stored it (``:conf`` goes with the room's
        #: last entry), so an emptied room's pool still shows ``1/2``, not ``1/?``.
        self._sizes: OrderedDict[str, int] = OrderedDict()

    def collect(self) -> Snapshot:
        with self._lock:
            started = time.perf_counter()
            now_s = time.time()
            snap = Snapshot(self.store.name, self.store.prefix, now_s, self.writes)
            snap.history_s = self.history.window_s
            try:
                pools = ops.pools(self.store)
                self.history.add(now_s, pools)
                snap.pools = [self._pool(p, now_s) for p in pools]
                snap.holds = ops.holds(self.store)
                snap.limits = [asdict(lim) for lim in ops.limits(self.store, burst=self.burst)]
                snap.metrics, hits = metrics_hits(self.store.prefix)
                names = ops.cache_namespaces(self.store)[: self.max_caches]
                snap.caches = [self._cache(ops.cache_stats(self.store, ns), hits) for ns in names]
            except Exception as exc:  # the store went away: say so on the page, keep ticking
                snap.error = f"{type(exc).__name__}: {exc}"
            snap.read_ms = (time.perf_counter() - started) * 1000
            return snap

    def _pool(self, p: ops.Pool, now_s: float) -> dict[str, Any]:
        row = asdict(p)
        row["max_size_remembered"] = False
        if p.max_size is not None:
            self._sizes[p.key] = p.max_size
            self._sizes.move_to_end(p.key)
            while len(self._sizes) > self.history.max_pools:
                self._sizes.popitem(last=False)
        elif p.key in self._sizes:
            row["max_size"], row["max_size_remembered"] = self._sizes[p.key], True
        row["history"] = [[round(t - now_s, 1), n, w] for t, n, w in self.history.series(p.key)]
        return row

    def _cache(self, stats: ops.CacheStats, hits: dict[str, tuple[int, int]]) -> dict[str, Any]:
        row = asdict(stats)
        row["template"] = stats.namespace[len(self.store.prefix) : -len("-cached")]
        hit, miss = hits.get(stats.namespace, (0, 0))
        row["hits"], row["misses"] = hit, miss
        row["hit_rate"] = hit / (hit + miss) if hit + miss else None
        return row
