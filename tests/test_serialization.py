"""Serializers (``pickle``, ``json``, ``msgpack``), ``enc_dec`` around them, values that cannot be
serialized, and signed entries (``signing_key``) against tampering.

Every test runs on each backend of ``make_cachify`` (memory, redis), sync and async where the
code paths differ. Tampering writes into the store directly (the raw Redis client, or the
``MemoryStore``'s table), as an attacker with access to the cache would. The tampered pickle's
``__reduce__`` records a side effect, so "never unpickled" is checked, not assumed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from cachify_core import Cachify, CachifySerializationError, MemoryStore

from .storage import redis_key, stored

KINDS = ["sync", "async"]
SIGNING_KEY = b"k" * 32
PLAIN_DATA = {
    "name": "ada",
    "ids": [1, 2, 3],
    "nested": {"ok": True, "none": None, "ratio": 0.5},
    "empty": [],
}


# -- helpers --------------------------------------------------------------------------------
async def invoke(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def returning(
    c: Cachify, template: str, kind: str, make: Callable[[int], Any], **options: Any
) -> tuple[Any, list[int]]:
    """``c.cached(template)`` over a function ``fn(x) -> make(x)`` of ``kind``, recording calls."""
    calls: list[int] = []
    if kind == "sync":

        def fn(x: int) -> Any:
            calls.append(x)
            return make(x)

    else:

        async def fn(x: int) -> Any:  # type: ignore[misc]
            calls.append(x)
            await asyncio.sleep(0)
            return make(x)

    return c.cached(template, **options)(fn), calls


def sharing(c: Cachify, **options: Any) -> Cachify:
    """Another instance on ``c``'s store and prefix (different serializer or signing key)."""
    backend = c.sync_backend
    client = backend if isinstance(backend, MemoryStore) else backend.client  # type: ignore[attr-defined]
    return Cachify(sync_client=client, prefix=c.prefix, **options)


def rewrite(c: Cachify, full_key: str, change: Callable[[bytes], bytes]) -> None:
    """Replace the stored bytes of entry ``full_key`` in place, bypassing cachify."""
    backend = c.sync_backend
    entry = full_key[len(c.prefix) :]
    if isinstance(backend, MemoryStore):
        for key in list(backend._cache):
            ns, sep, k = key.partition("\x00")
            if sep and k == entry and ns.startswith(c.prefix):
                value, *rest = backend._cache[key]
                backend._cache[key] = (change(value), *rest)  # type: ignore[assignment]
                return
        raise AssertionError(f"{full_key} is not stored")
    rkey = redis_key(c, full_key)
    assert rkey is not None, f"{full_key} is not stored"
    client = backend.client  # type: ignore[attr-defined]
    head, sep, payload = bytes(client.get(rkey)).partition(b":")  # "<generation>:<bytes>"
    assert sep
    client.set(rkey, head + b":" + change(payload), keepttl=True)


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


# A pickle whose loading has a visible effect: it appends to this module's list.
UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Booby:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _record_unpickling, ("the tampered pickle ran",)


@pytest.fixture(autouse=True)
def _no_unpickling_yet() -> None:
    UNPICKLED.clear()


@dataclass(frozen=True)
class Point:
    x: int
    y: int


def warnings_and_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# -- serializers ----------------------------------------------------------------------------
@pytest.mark.parametrize("serializer", ["pickle", "json", "msgpack"])
@pytest.mark.parametrize("kind", KINDS)
async def test_plain_data_round_trips(
    make_cachify: Callable[..., Cachify], kind: str, serializer: str
) -> None:
    if serializer == "msgpack":
        pytest.importorskip("msgpack")
    c = make_cachify(serializer=serializer)
    f, calls = returning(c, "data-{x}", kind, lambda x: {**PLAIN_DATA, "x": x})
    assert await invoke(f, 1) == {**PLAIN_DATA, "x": 1}
    assert await invoke(f, 1) == {**PLAIN_DATA, "x": 1}  # a hit, decoded by the serializer
    assert calls == [1]
    assert c.codec.serializer.name == serializer
    raw = stored(c, f"{c.prefix}data-1-cached")
    assert raw is not None
    if serializer == "json":
        assert b'"name":"ada"' in raw  # really JSON on the wire, not a pickle


async def test_msgpack_keeps_bytes(make_cachify: Callable[..., Cachify]) -> None:
    pytest.importorskip("msgpack")
    c = make_cachify(serializer="msgpack")
    f, calls = returning(c, "bytes-{x}", "async", lambda x: {"blob": b"\x00\xff" * x})
    assert await f(3) == {"blob": b"\x00\xff" * 3}
    assert await f(3) == {"blob": b"\x00\xff" * 3}
    assert calls == [3]


@pytest.mark.parametrize("kind", KINDS)
async def test_enc_dec_still_applies_with_json(make_cachify: Callable[..., Cachify], kind: str) -> None:
    c = make_cachify(serializer="json")
    enc_dec = (lambda p: {"x": p.x, "y": p.y}, lambda d: Point(**d))
    f, calls = returning(c, "pt-{x}", kind, lambda x: Point(x, -x), enc_dec=enc_dec)
    assert await invoke(f, 2) == Point(2, -2)
    assert await invoke(f, 2) == Point(2, -2)  # decoded back into a Point
    assert calls == [2]
    raw = stored(c, f"{c.prefix}pt-2-cached")
    assert raw is not None
    assert raw.endswith(b'{"x":2,"y":-2}')  # the encoder ran before JSON


# -- values that cannot be serialized ---------------------------------------------------------
def no_json(x: int) -> Any:
    return lambda: x  # JSON has no functions


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("this object refuses to be pickled")


@pytest.mark.parametrize(("serializer", "make"), [("json", no_json), ("pickle", lambda x: Unpicklable())])
@pytest.mark.parametrize("kind", KINDS)
async def test_an_unserializable_result_is_returned_not_cached_and_logged(
    make_cachify: Callable[..., Cachify],
    caplog: pytest.LogCaptureFixture,
    kind: str,
    serializer: str,
    make: Callable[[int], Any],
) -> None:
    caplog.set_level(logging.ERROR, logger="cachify")
    c = make_cachify(serializer=serializer)
    f, calls = returning(c, "odd-{x}", kind, make)
    first = await invoke(f, 5)
    second = await invoke(f, 5)
    assert type(first) is type(second) is type(make(5))  # the caller gets the real result
    assert calls == [5, 5]  # nothing was cached
    assert stored(c, f"{c.prefix}odd-5-cached") is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2
    for message in errors:
        assert "fn" in message  # the function ...
        assert "odd-5-cached" in message  # ... and the key
        assert serializer in message


@pytest.mark.parametrize("kind", KINDS)
async def test_precaching_an_unserializable_value_raises_a_clear_error(
    make_cachify: Callable[..., Cachify], kind: str
) -> None:
    c = make_cachify(serializer="json")
    f, _calls = returning(c, "pre-{x}", kind, lambda x: x)
    with pytest.raises(CachifySerializationError, match=r"pre-1-cached.*json"):
        await invoke(f.precache_value, 1, value_to_cache=object())
    assert stored(c, f"{c.prefix}pre-1-cached") is None


# -- signing --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
async def test_signed_entries_verify_and_hit(make_cachify: Callable[..., Cachify], kind: str) -> None:
    c = make_cachify(signing_key=SIGNING_KEY)
    f, calls = returning(c, "signed-{x}", kind, lambda x: {"x": x})
    assert await invoke(f, 1) == {"x": 1}
    assert await invoke(f, 1) == {"x": 1}
    assert calls == [1]
    # another process with the same key verifies the entry; one with another key does not
    same, same_calls = returning(
        sharing(c, signing_key=SIGNING_KEY), "signed-{x}", kind, lambda x: "recomputed"
    )
    other, other_calls = returning(
        sharing(c, signing_key=b"another key, 16+ bytes"), "signed-{x}", kind, lambda x: "recomputed"
    )
    assert await invoke(same, 1) == {"x": 1}
    assert same_calls == []
    assert await invoke(other, 1) == "recomputed"
    assert other_calls == [1]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_flipped_byte_is_a_logged_miss(
    make_cachify: Callable[..., Cachify], caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.WARNING, logger="cachify")
    c = make_cachify(signing_key=SIGNING_KEY)
    f, calls = returning(c, "flip-{x}", kind, lambda x: {"x": x})
    await invoke(f, 1)
    rewrite(c, f"{c.prefix}flip-1-cached", flip_last_byte)
    assert await invoke(f, 1) == {"x": 1}
    assert calls == [1, 1]  # recomputed
    assert any("flip-1-cached" in m and "signature" in m for m in warnings_and_errors(caplog))
    assert await invoke(f, 1) == {"x": 1}
    assert calls == [1, 1]  # and re-stored, signed


@pytest.mark.parametrize("kind", KINDS)
async def test_a_tampered_pickle_is_never_unpickled(
    make_cachify: Callable[..., Cachify], caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.WARNING, logger="cachify")
    c = make_cachify(signing_key=SIGNING_KEY)
    f, calls = returning(c, "evil-{x}", kind, lambda x: {"x": x})
    await invoke(f, 1)
    evil = pickle.dumps(Booby())
    mac_and_stamp = 32 + 8  # keep the old MAC and timestamp, swap the payload
    rewrite(c, f"{c.prefix}evil-1-cached", lambda data: data[:mac_and_stamp] + evil)

    assert await invoke(f, 1) == {"x": 1}
    assert UNPICKLED == [], "the tampered entry was unpickled"
    assert calls == [1, 1]
    assert any("evil-1-cached" in m for m in warnings_and_errors(caplog))

    # The control: the same planted bytes do run when nothing checks them (hence signing).
    unsigned = sharing(c)
    g, _ = returning(unsigned, "evil-{x}", kind, lambda x: {"x": x})
    rewrite(c, f"{c.prefix}evil-1-cached", lambda data: data[:8] + evil)  # timestamp + pickle
    assert await invoke(g, 1) == "the tampered pickle ran"
    assert UNPICKLED == ["the tampered pickle ran"]


@pytest.mark.parametrize("kind", KINDS)
async def test_instances_with_and_without_signing_read_each_others_entries_safely(
    make_cachify: Callable[..., Cachify], kind: str
) -> None:
    signed = make_cachify(signing_key=SIGNING_KEY)
    unsigned = sharing(signed)
    f_signed, signed_calls = returning(signed, "mixed-{x}", kind, lambda x: ("signed", x))
    f_unsigned, unsigned_calls = returning(unsigned, "mixed-{x}", kind, lambda x: ("unsigned", x))

    assert await invoke(f_signed, 1) == ("signed", 1)
    # an instance without signing reads a signed entry: no crash, a miss, the right value
    assert await invoke(f_unsigned, 1) == ("unsigned", 1)
    assert unsigned_calls == [1]
    # a signed instance never trusts an unsigned entry
    assert await invoke(f_signed, 1) == ("signed", 1)
    assert signed_calls == [1, 1]


def test_a_short_signing_key_is_refused(make_cachify: Callable[..., Cachify]) -> None:
    from cachify_core import CachifyInitError

    with pytest.raises(CachifyInitError, match="signing_key"):
        make_cachify(signing_key=b"short")
