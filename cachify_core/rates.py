"""Rate strings (``"10/s"``, ``"100/m"``, ``"5/2s"``) and the GCRA limits they become.

One definition, shared by :mod:`cachify_core.rate` and the task options: a rate is
``<count>/[<n>]<unit>`` with units ``s``, ``m``, ``h``, ``d`` — ``count`` calls per ``n`` units.

A limit is enforced as GCRA (the generic cell rate algorithm): calls are spaced one *emission
interval* (``period / count``) apart on average, and up to ``burst`` calls may go at once from
idle. The interval is rounded **up** to whole microseconds, so a limit never admits more than
it says; in any window of one period a limit admits at most ``count + burst - 1`` calls of
cost 1 (``count`` with ``burst=1``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .backends.base import RateLimit

__all__ = ["UNIT_MS", "Rate", "parse_rate", "parse_rates", "rate_limits"]

#: Milliseconds per rate unit.
UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*")
_FORMAT = "'<count>/<period>' such as '10/s', '100/m', '1000/h' or '5/2s' (units s, m, h, d)"


@dataclass(frozen=True)
class Rate:
    """``count`` calls per ``period_ms`` milliseconds."""

    count: int
    period_ms: int

    @property
    def emission_us(self) -> int:
        """Microseconds between calls at the sustained rate, rounded up (never over-admits)."""
        return max(1, -(-self.period_ms * 1000 // self.count))

    @property
    def name(self) -> str:
        """The limit's name in its key: ``"<count>/<period_ms>ms"`` (one state per distinct rate)."""
        return f"{self.count}/{self.period_ms}ms"

    def __str__(self) -> str:
        for unit, ms in reversed(UNIT_MS.items()):
            if self.period_ms % ms == 0:
                n = self.period_ms // ms
                return f"{self.count}/{'' if n == 1 else n}{unit}"
        return f"{self.count}/{self.period_ms}ms"


def parse_rate(text: str) -> Rate:
    """``"10/s"`` → ``Rate(10, 1000)``; ``ValueError`` saying the expected form otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"a rate must be a string {_FORMAT}, got {type(text).__name__} {text!r}")
    match = _RATE.fullmatch(text)
    if match is None or match.group(3) not in UNIT_MS:
        raise ValueError(f"rate {text!r} is not {_FORMAT}")
    count, n, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3)
    if count < 1:
        raise ValueError(f"rate {text!r}: the count must be >= 1 (use a longer period for slower rates)")
    if n < 1:
        raise ValueError(f"rate {text!r}: the period must be >= 1{unit}")
    return Rate(count, n * UNIT_MS[unit])


def parse_rates(value: str | Sequence[str], where: str) -> tuple[Rate, ...]:
    """One rate string or a non-empty list of them, applied together; errors name ``where``."""
    texts = [value] if isinstance(value, str) else value
    if isinstance(value, (bytes, bytearray)) or not isinstance(texts, Sequence) or not texts:
        raise ValueError(
            f"{where}: rate must be a string {_FORMAT} or a non-empty list of them, got {value!r}"
        )
    rates: list[Rate] = []
    for text in texts:
        try:
            rate = parse_rate(text)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if rate in rates:
            raise ValueError(f"{where}: rate {text!r} is listed twice (as {rates[rates.index(rate)]})")
        rates.append(rate)
    return tuple(rates)


def _check_int(where: str, option: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {option} must be an int >= 1, got {value!r}")
    return value


def rate_limits(
    where: str, rate: str | Sequence[str], burst: int | None, cost: int
) -> tuple[tuple[Rate, ...], tuple[RateLimit, ...]]:
    """Validate ``rate``/``burst``/``cost`` and build the backend's view of each limit.

    ``burst`` (``None``: each limit's count) applies to every limit; ``cost`` (calls of weight
    ``cost``) must fit in every limit's burst, or no call could ever be admitted.
    """
    rates = parse_rates(rate, where)
    cost = _check_int(where, "cost", cost)
    if burst is not None:
        _check_int(where, "burst", burst)
    limits = tuple(RateLimit(r.name, r.emission_us, r.count if burst is None else burst) for r in rates)
    for r, limit in zip(rates, limits, strict=True):
        if cost > limit.burst:
            raise ValueError(
                f"{where}: cost={cost} exceeds the burst of rate '{r}' ({limit.burst}), so no call "
                "could ever be admitted; lower cost or raise burst"
            )
    return rates, limits
