"""Test-only views of where ``@cached`` stores entries (the layout is the backends' business).

An entry of template ``t`` formatted as ``k`` lives in namespace ``<prefix><t>-cached`` under
``k`` (which ends in ``-cached``). Tests name entries by ``<prefix><k>``, as py-cachify's key
would be, and these helpers find the namespace.
"""

from __future__ import annotations

from cachify_core import Cachify
from cachify_core.backends import MemoryStore


def _split(c: Cachify, full_key: str) -> str:
    assert full_key.startswith(c.prefix), f"{full_key!r} lacks prefix {c.prefix!r}"
    return full_key[len(c.prefix) :]


def redis_key(c: Cachify, full_key: str) -> str | None:
    """The Redis key holding the entry ``full_key`` (``None`` if absent)."""
    entry = _split(c, full_key)
    client = c.sync_backend.client  # type: ignore[attr-defined]
    pattern = "{" + glob_escape(c.prefix) + "*}:" + glob_escape(entry)
    for raw in client.scan_iter(match=pattern, count=1000):
        key = raw.decode()
        if key.endswith("}:" + entry):
            return key
    return None


def glob_escape(text: str) -> str:
    return "".join(f"[{ch}]" if ch in "*?[]\\" else ch for ch in text)


def stored(c: Cachify, full_key: str) -> bytes | None:
    """The stored bytes of entry ``full_key`` in the current generation, or ``None``."""
    entry = _split(c, full_key)
    backend = c.sync_backend
    if isinstance(backend, MemoryStore):
        for key in list(backend._cache):
            ns, sep, k = key.partition("\x00")
            if sep and k == entry and ns.startswith(c.prefix):
                return backend.cache_get(ns, k).value
        return None
    key = redis_key(c, full_key)
    if key is None:
        return None
    ns = key[1 : key.rindex("}:" + entry)]
    return backend.cache_get(ns, entry).value


__all__ = ["redis_key", "stored"]
