"""How cached values become bytes.

pickle is the default (py-cachify stores pickles); a user ``enc_dec=(encoder, decoder)`` is
applied around it, encoder before pickling and decoder after unpickling, as in py-cachify.
"""

from __future__ import annotations

import pickle
from typing import Any, Protocol

__all__ = ["PickleSerializer", "Serializer"]


class Serializer(Protocol):
    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class PickleSerializer:
    """Any picklable value. Only read pickles from a cache that only you can write to."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)
