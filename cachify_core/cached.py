"""``@cached``: store a function's result under a key built from its arguments.

TTL precedence (py-cachify 3.1's): an explicit ``ttl`` wins, ``ttl=None`` never expires,
omitted ``ttl`` uses the instance's ``default_cache_ttl`` (``None``: no expiry).
``None`` results are cached like any other value (py-cachify re-runs the function for them).

Round trips on Redis: a hit 1 (GET), a miss 2 (GET, then SET), ``reset`` 1 per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from .instance import Cachify, get_cachify, seconds_to_ms
from .keys import KeyTemplate
from .protocols import UNSET, Decoder, Encoder, UnsetType
from .wrapping import AsyncResetWrappedF, SyncResetWrappedF, attach, is_coroutine_function

__all__ = ["CachedDecorator", "cached", "make_cached"]

P = ParamSpec("P")
R = TypeVar("R")


class CachedDecorator(Protocol):
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncResetWrappedF[P, R]: ...

    @overload
    def __call__(self, func: Callable[P, R], /) -> SyncResetWrappedF[P, R]: ...


def cached(
    key: str,
    ttl: float | UnsetType | None = UNSET,
    enc_dec: tuple[Encoder, Decoder] | None = None,
) -> CachedDecorator:
    """Cache the decorated function's results under ``key`` (a template over its arguments).

    ``ttl`` in seconds; ``enc_dec=(encoder, decoder)`` transforms values around serialization.
    The wrapped function gets ``reset(*args, **kwargs)`` (sync or async like itself) that
    deletes the entry for those arguments, and the entries of cached layers under it.
    """
    return make_cached(get_cachify, key, ttl, enc_dec)


class _Codec:
    """Value <-> bytes for one decorated function (no I/O)."""

    __slots__ = ("decoder", "encoder")

    def __init__(self, enc_dec: tuple[Encoder, Decoder] | None) -> None:
        if enc_dec is not None and (
            not isinstance(enc_dec, tuple) or len(enc_dec) != 2 or not all(map(callable, enc_dec))
        ):
            raise TypeError("enc_dec must be a tuple (encoder, decoder) of two callables")
        self.encoder: Encoder | None = enc_dec[0] if enc_dec is not None else None
        self.decoder: Decoder | None = enc_dec[1] if enc_dec is not None else None

    def encode(self, c: Cachify, value: Any) -> bytes:
        return c.serializer.dumps(value if self.encoder is None else self.encoder(value))

    def decode(self, c: Cachify, raw: bytes) -> Any:
        value = c.serializer.loads(raw)
        return value if self.decoder is None else self.decoder(value)


def make_cached(
    provider: Callable[[], Cachify],
    key: str,
    ttl: float | UnsetType | None,
    enc_dec: tuple[Encoder, Decoder] | None,
) -> CachedDecorator:
    ttl_ms = UNSET if isinstance(ttl, UnsetType) else seconds_to_ms(ttl, f"cached {key!r} ttl")
    codec = _Codec(enc_dec)

    def resolve_ttl(c: Cachify) -> int | None:
        return c.default_cache_ttl_ms if isinstance(ttl_ms, UnsetType) else ttl_ms

    def decorator(func: Callable[..., Any]) -> Any:
        template = KeyTemplate(key, func, "cached")
        inner_reset = getattr(func, "reset", None)

        if is_coroutine_function(func):

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                c = provider()
                full_key = c.prefix + template.format(args, kwargs)
                raw = await c.async_backend.get(full_key)
                if raw is not None:
                    return codec.decode(c, raw)
                result = await func(*args, **kwargs)
                await c.async_backend.set(full_key, codec.encode(c, result), resolve_ttl(c))
                return result

            async def areset(*args: Any, **kwargs: Any) -> None:
                c = provider()
                await c.async_backend.delete(c.prefix + template.format(args, kwargs))
                if inner_reset is not None and is_coroutine_function(inner_reset):
                    await inner_reset(*args, **kwargs)

            return attach(async_wrapper, func, reset=areset)

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            c = provider()
            full_key = c.prefix + template.format(args, kwargs)
            raw = c.sync_backend.get(full_key)
            if raw is not None:
                return codec.decode(c, raw)
            result = func(*args, **kwargs)
            c.sync_backend.set(full_key, codec.encode(c, result), resolve_ttl(c))
            return result

        def reset(*args: Any, **kwargs: Any) -> None:
            c = provider()
            c.sync_backend.delete(c.prefix + template.format(args, kwargs))
            if inner_reset is not None and callable(inner_reset):
                inner_reset(*args, **kwargs)

        return attach(sync_wrapper, func, reset=reset)

    return decorator
