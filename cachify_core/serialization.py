"""How cached values become bytes: a serializer, an envelope, and optional signing.

Serializers: ``pickle`` (default; any picklable value, as py-cachify), ``json`` (plain data,
safe to read from a shared cache), ``msgpack`` (compact plain data; ``pip install msgpack``),
or any object with ``dumps``/``loads``. A per-function ``enc_dec=(encoder, decoder)`` runs
around the serializer, encoder first, as in py-cachify.

Envelope (stored bytes): ``[HMAC-SHA256 (32 B), if signing] [written-at, unix ms (8 B)] [payload]``.
The timestamp serves ``stale_after``. With ``signing_key`` set, an entry whose MAC does not
verify is a miss and is never deserialized: unpickling bytes that someone else could write
runs their code, so a cache shared with anything less trusted than the process itself must be
signed (or use ``json``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import pickle
import struct
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from .errors import CachifyError, CachifyInitError

__all__ = [
    "CachifySerializationError",
    "Codec",
    "Entry",
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "serializer_for",
]

logger = logging.getLogger("cachify")

_MAC_BYTES = 32
_STAMP = struct.Struct(">Q")


class CachifySerializationError(CachifyError):
    """A value could not be serialized (or a stored one deserialized)."""


class Serializer(Protocol):
    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class PickleSerializer:
    """Any picklable value. Only read pickles from a cache only trusted code can write, or sign."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


class JsonSerializer:
    """JSON: dicts, lists, str, numbers, bool, None (tuples come back as lists)."""

    name = "json"

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class MsgpackSerializer:
    """MessagePack: like JSON plus bytes, more compact. Needs ``pip install msgpack``."""

    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError:
            raise CachifyInitError(
                "serializer='msgpack' needs msgpack: pip install msgpack (or the 'msgpack' extra of cachify-tasks)"
            ) from None
        self._msgpack = msgpack

    def dumps(self, value: Any) -> bytes:
        data: bytes = self._msgpack.packb(value, use_bin_type=True)
        return data

    def loads(self, data: bytes) -> Any:
        return self._msgpack.unpackb(data, raw=False)


def serializer_for(spec: str | Serializer | None) -> Serializer:
    if spec is None or spec == "pickle":
        return PickleSerializer()
    if spec == "json":
        return JsonSerializer()
    if spec == "msgpack":
        return MsgpackSerializer()
    if isinstance(spec, str):
        raise CachifyInitError(f"serializer must be 'pickle', 'json', 'msgpack' or an object, got {spec!r}")
    if not (callable(getattr(spec, "dumps", None)) and callable(getattr(spec, "loads", None))):
        raise CachifyInitError(f"serializer {spec!r} must have dumps(value) -> bytes and loads(bytes)")
    return spec


class Entry(NamedTuple):
    value: Any
    written_at_ms: int

    def age_s(self) -> float:
        return time.time() - self.written_at_ms / 1000.0


class Codec:
    """Values <-> stored bytes for one Cachify instance (no I/O)."""

    __slots__ = ("_key", "serializer")

    def __init__(self, serializer: Serializer, signing_key: bytes | str | None = None) -> None:
        self.serializer = serializer
        if isinstance(signing_key, str):
            signing_key = signing_key.encode()
        if signing_key is not None and len(signing_key) < 16:
            raise CachifyInitError("signing_key must be at least 16 bytes")
        self._key = signing_key

    @property
    def signed(self) -> bool:
        return self._key is not None

    def pack(self, value: Any, where: str) -> bytes:
        """Envelope ``value``; :class:`CachifySerializationError` naming ``where`` if it cannot."""
        try:
            payload = self.serializer.dumps(value)
        except Exception as exc:
            raise CachifySerializationError(
                f"{where}: cannot serialize a {type(value).__name__} with {self.serializer.name}: {exc}"
            ) from exc
        body = _STAMP.pack(int(time.time() * 1000)) + payload
        if self._key is None:
            return body
        return hmac.new(self._key, body, hashlib.sha256).digest() + body

    def unpack(self, data: bytes, where: Callable[[], str]) -> Entry | None:
        """The stored entry, or ``None`` (logged) if it fails verification or cannot be read.

        ``where()`` names the entry in the log line; it is only called when there is one.
        """
        if self._key is not None:
            mac, data = data[:_MAC_BYTES], data[_MAC_BYTES:]
            if not hmac.compare_digest(mac, hmac.new(self._key, data, hashlib.sha256).digest()):
                logger.warning("cachify: %s: entry failed signature verification; treated as a miss", where())
                return None
        if len(data) < _STAMP.size:
            logger.warning("cachify: %s: entry is truncated; treated as a miss", where())
            return None
        try:
            value = self.serializer.loads(data[_STAMP.size :])
        except Exception as exc:
            logger.warning(
                "cachify: %s: entry cannot be read with %s (%s); treated as a miss",
                where(),
                self.serializer.name,
                exc,
            )
            return None
        return Entry(value, _STAMP.unpack_from(data)[0])
