"""Where the core reports what it does, for metrics: one module-level ``sink``, ``None`` when off.

Every call site in the core is ``if events.sink is not None: events.sink.<method>(...)``, so with
metrics off an operation pays one module attribute load and a comparison (no call, no
allocation; a call that waits for a lock or slot also reads the clock twice, next to its round
trips). This module imports nothing outside the standard library; the adapters
that need ``prometheus_client`` or ``opentelemetry-api`` live next to it and are imported only
by :func:`cachify_core.metrics.enable_prometheus` / :func:`~cachify_core.metrics.enable_otel`.

Labels a call site passes (never a rendered key, so cardinality stays bounded):

* ``kind``: ``lock``, ``once``, ``pool``, ``cache``, ``rate``;
* ``key``: the key *template* as declared (``"order-{order_id}"`` for decorators and task
  options), or, for ``lock(...)`` / ``pool(...)`` / ``rate_limit(...)`` objects, the key exactly
  as the caller gave it (a caller building that key per call from data makes one label per
  value: give such objects a fixed key, or use the decorators);
* ``task``: the task name for the task layer, ``""`` everywhere else.

Holds are identified by their owner token between ``acquired`` and ``released``/``lost``, so the
sink can time them and count a lost one once (see :class:`Sink`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..instance import Cachify

__all__ = ["Sink", "now", "sink"]

#: Monotonic seconds, for the few call sites that time a wait (read only when ``sink`` is set).
now = time.perf_counter


class Sink(Protocol):
    """What the core reports. Methods are called on the caller's thread (or loop) and must not
    block or raise; implementations: :class:`cachify_core.metrics.recorder.Recorder`."""

    def count(self, event: str, kind: str, key: str, task: str, n: int = 1) -> None:
        """``n`` more of ``event``: ``denied``, ``duplicate_at_send``, ``duplicate_at_run``,
        ``requeued``, ``parked``, ``handed_over``, ``rate_limited``, ``cache_hit``,
        ``cache_miss``, ``cache_error``."""

    def acquired(
        self, kind: str, key: str, task: str, token: str, cachify: Cachify | None = None, full_key: str = ""
    ) -> None:
        """A hold (lock, once hold, pool slot) was taken under ``token``. Pools pass their
        instance and stored key, so the sink can read their occupancy on scrape."""

    def released(self, kind: str, key: str, task: str, token: str, ok: bool) -> None:
        """The holder released ``token``'s hold; ``ok=False``: it was already gone (expired by
        its TTL, or force-released), which counts as ``expired`` unless already counted."""

    def lost(self, kind: str, token: str) -> None:
        """A lease renewal found ``token``'s hold gone (counted as ``expired`` once)."""

    def waited(self, kind: str, key: str, task: str, seconds: float) -> None:
        """A caller blocked ``seconds`` in ``lock(nowait=False)`` / ``pool(timeout=...)``."""

    def verdict(self, task: str, verdict: str) -> None:
        """A task delivery's admission verdict (``run``, ``cached``, ``skip``, ``parked``, ...)."""

    def room_parked(self, key: str, task: str, entry_id: str, cachify: Cachify, full_key: str) -> None:
        """A delivery parked in a waiting room as ``entry_id`` (counted as ``parked``)."""

    def room_claimed(self, key: str, task: str, entry_id: str) -> None:
        """A handed-over copy carrying ``entry_id`` was admitted on its reserved slot."""


#: The installed sink; ``None``: metrics are off (the default).
sink: Sink | None = None
