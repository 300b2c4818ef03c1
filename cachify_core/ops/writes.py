"""Operators' writes, each through the backend primitive the library itself uses.

* a lock, run-once hold or fill lock: ``lock_release`` (compare-and-delete: only if ``holder``
  still holds it) or ``lock_force_release`` (whoever holds it); both wake one waiter;
* a pool slot: ``pool_release`` of the slot's token (owner-checked), which wakes a blocking
  ``pool()`` waiter. On a pool with a waiting room the freed slot goes to the longest-waiting
  entry at that room's next call (an admission, a release or the ~1 s sweep), whose caller
  publishes the hand-over at once. ``room_release`` is not used here: it would hand the slot
  over inside this command, which cannot publish (it has no broker), so the hand-over would
  wait for its lease (``handover_lease_ms``, 10 s) before a sweep re-published it;
* a reservation (``#<entry id>``) is refused: it belongs to a hand-over on its way and ends by
  itself (when the delivery arrives, or ``slot_ttl_ms`` after the hand-over);
* a cache namespace: ``cache_clear`` (one INCR of its generation, O(1)).

:func:`plan_release` / :func:`apply_release` are the pattern clean-up: the plan lists each hold
with the holder it had and each live slot with its token, and applying it releases exactly
those, owner-checked, so a hold that changed hands since the plan is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import reads
from .store import Store, split_key, tag_key

__all__ = [
    "RELEASE_KINDS",
    "Cleared",
    "Release",
    "apply_release",
    "cache_clear",
    "parse_key",
    "plan_release",
    "release",
]

#: What ``release`` can release: the three hold kinds and pool slots.
RELEASE_KINDS = ("lock", "once", "fill", "pool")


@dataclass(frozen=True)
class Release:
    """One release: of ``holder``'s hold of ``key`` (a slot, for a pool), done or not."""

    key: str  #: the stored key, ``{PYC-sync-42-once}``
    kind: str  #: ``lock``, ``once``, ``fill`` or ``pool``
    holder: str  #: whose hold or slot (``""``: nobody held it)
    released: bool  #: it was held by ``holder`` and is now released (``False`` in a dry run)


@dataclass(frozen=True)
class Cleared:
    namespace: str
    generation: int  #: the generation now; entries of every earlier one read as misses


def parse_key(text: str) -> tuple[str, str]:
    """``(full key, kind)`` of a key as ``holds``/``pools`` print it (``{PYC-sync-42-once}``),
    or without its braces (``PYC-sync-42-once``). ``ValueError`` naming the kinds otherwise."""
    if not isinstance(text, str) or not text:
        raise ValueError("release: give the key as `holds`/`pools` print it, e.g. '{PYC-sync-42-once}'")
    parts = split_key(text) if text.startswith("{") else (text, "")
    if parts is None or parts[1]:
        raise ValueError(
            f"release: {text!r} is a companion key, not a hold or a pool; give the key itself, "
            "as `holds`/`pools` print it (e.g. '{PYC-stripe-pool}', not '{PYC-stripe-pool}:room')"
        )
    full = parts[0]
    for kind in ("lock", "once", "pool"):
        if full.endswith(f"-{kind}"):
            return full, kind
    if reads._FILL.match(full):
        return full, "fill"
    raise ValueError(
        f"release: {text!r} is not a lock, once, fill or pool key (they end in -lock, -once, "
        "-cached-fill<n> or -pool, inside braces); see `cachify holds` and `cachify pools`"
    )


def _live_slots(store: Store, full: str) -> list[str]:
    tag = tag_key(full)
    node = store.node_of(tag)
    members = node.client.zrangebyscore(tag, f"({node.time_ms()}", "+inf")
    return [reads._text(m) for m in members if not reads._text(m).startswith("#")]


def release(store: Store, key: str, holder: str | None = None, force: bool = False) -> list[Release]:
    """Release ``key`` (a hold, or a pool's slot) held by ``holder``, or whoever holds it with
    ``force`` (a pool: every live slot but reservations, each by its own token)."""
    if (holder is None) == (not force):
        raise ValueError(
            "release: say whose hold to release (--holder ID) or release it whoever holds it (--force)"
        )
    full, kind = parse_key(key)
    tag = tag_key(full)
    b = store.backend
    if kind != "pool":
        if holder is not None:
            return [Release(tag, kind, holder, b.lock_release(full, holder))]
        current = b.lock_holder(full)
        return [Release(tag, kind, current or "", current is not None and b.lock_force_release(full))]
    if holder is not None:
        if holder.startswith("#"):
            raise ValueError(
                f"release: {holder!r} is a waiting room's reservation for a hand-over on its way, "
                "not a running holder's slot; it ends by itself when the delivery arrives or its "
                "lease runs out"
            )
        return [Release(tag, kind, holder, b.pool_release(full, holder))]
    return [Release(tag, kind, token, b.pool_release(full, token)) for token in _live_slots(store, full)]


def plan_release(store: Store, pattern: str, kinds: tuple[str, ...] = RELEASE_KINDS) -> list[Release]:
    """What :func:`apply_release` would release for ``pattern`` (names, as the reads match
    them): every hold of ``kinds`` with its holder, every live slot of matching pools (not
    reservations). Read-only; each entry has ``released=False``."""
    unknown = sorted(set(kinds) - set(RELEASE_KINDS))
    if unknown:
        raise ValueError(f"release: unknown kind(s) {unknown}; choose from {list(RELEASE_KINDS)}")
    plan = [Release(h.key, h.kind, h.holder, False) for h in reads.holds(store, pattern) if h.kind in kinds]
    if "pool" in kinds:
        for p in reads.pools(store, pattern):
            plan += [Release(p.key, "pool", s.holder, False) for s in p.slots if not s.reserved]
    return plan


def apply_release(store: Store, plan: list[Release]) -> list[Release]:
    """Release each planned hold or slot if its planned holder still has it (owner-checked)."""
    b = store.backend
    done: list[Release] = []
    for item in plan:
        full, kind = parse_key(item.key)
        ok = b.pool_release(full, item.holder) if kind == "pool" else b.lock_release(full, item.holder)
        done.append(Release(item.key, item.kind, item.holder, ok))
    return done


def cache_clear(store: Store, template: str) -> Cleared:
    """Clear ``@cached(template)``'s namespace in O(1), as ``fn.clear_cache()`` does."""
    ns = reads.cache_namespace(store, template)
    store.backend.cache_clear(ns)
    return Cleared(ns, reads.cache_stats(store, template).generation)
