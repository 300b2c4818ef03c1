"""Protocols users implement or receive: custom clients, encoders, and the UNSET marker."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Final, Protocol, runtime_checkable

__all__ = ["UNSET", "AsyncClient", "Decoder", "Encoder", "SyncClient", "UnsetType"]


@runtime_checkable
class SyncClient(Protocol):
    """A minimal blocking key-value client (py-cachify's contract).

    ``set(..., nx=True)`` must be an atomic set-if-absent returning a truthy value on success;
    locks, ``once`` and pools built on such a client are only as safe as that guarantee.
    """

    def get(self, name: str) -> Any | None: ...

    def set(self, name: str, value: Any, ex: int | None = None, nx: bool = False) -> Any: ...

    def delete(self, *names: str) -> Any: ...


@runtime_checkable
class AsyncClient(Protocol):
    """The asyncio twin of :class:`SyncClient`."""

    def get(self, name: str) -> Awaitable[Any | None]: ...

    def set(self, name: str, value: Any, ex: int | None = None, nx: bool = False) -> Awaitable[Any]: ...

    def delete(self, *names: str) -> Awaitable[Any]: ...


class Encoder(Protocol):
    def __call__(self, val: Any, /) -> Any: ...


class Decoder(Protocol):
    def __call__(self, val: Any, /) -> Any: ...


class UnsetType:
    """Type of :data:`UNSET`: "argument omitted", as distinct from an explicit ``None``."""

    _instance: UnsetType | None = None

    def __new__(cls) -> UnsetType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = UnsetType()
