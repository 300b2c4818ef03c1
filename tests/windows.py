"""Counting admissions per time window from outside the limiter (``test_rate`` and the rate benchmark).

An admission is known only as an interval ``[t0, t1]``: the caller's clock just before its
check and just after the answer; the limiter admitted it at some instant in between.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

__all__ = ["certain_peak"]


def certain_peak(intervals: Sequence[tuple[float, float]], window_s: float) -> int:
    """The most admissions certainly inside one half-open window of ``window_s``, anchored anywhere.

    Admission ``i`` is certainly inside ``[a, a + window_s)`` when ``t0_i >= a`` and
    ``t1_i < a + window_s``; the best anchors are the ``t0`` values, so this is exact for what
    the intervals prove. It is a lower bound of the true peak: an over-admission it reports
    really happened (it may miss one hidden by the intervals' width).
    """
    ordered = sorted(intervals)
    starts = [t0 for t0, _ in ordered]
    peak = 0
    for i, (a, _) in enumerate(ordered):
        end = bisect.bisect_left(starts, a + window_s)
        peak = max(peak, sum(1 for _, t1 in ordered[i:end] if t1 < a + window_s))
    return peak
