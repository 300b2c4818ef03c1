"""Metrics: Prometheus (extra ``prometheus``) or OpenTelemetry (extra ``otel``), one call each.

Off by default and free when off: the core reports through :mod:`.events`, whose ``sink`` is
``None`` until :func:`enable_prometheus` or :func:`enable_otel` installs one. This package
imports no third-party module until one of them is called. What is measured, the labels and
the cost: docs/METRICS.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import events
from .recorder import Recorder, Tee

if TYPE_CHECKING:
    from .otel import OtelRecorder
    from .prometheus import PrometheusRecorder

__all__ = ["disable", "enable_otel", "enable_prometheus", "events"]

_recorders: list[Recorder] = []


def _install(recorder: Recorder) -> None:
    _recorders.append(recorder)
    events.sink = recorder if len(_recorders) == 1 else Tee(list(_recorders))


def _missing(extra: str, module: str, exc: ImportError) -> ImportError:
    return ImportError(
        f"cachify metrics need {module} (not installed: {exc}); install the extra: pip install 'cachify-tasks[{extra}]'"
    )


def enable_prometheus(
    registry: Any = None, gauge_refresh_s: float = 10.0, **bounds: int
) -> PrometheusRecorder:
    """Register cachify's metrics on ``registry`` (default: ``prometheus_client.REGISTRY``) and
    start reporting. Enabling twice on one registry returns the recorder already there.
    ``bounds``: ``max_tracked_pools`` (64), ``max_open_holds``, ``max_parked`` (see
    :class:`~.recorder.Recorder`). Expose them as usual, e.g. ``prometheus_client.start_http_server(port)``.
    In prometheus_client's multiprocess mode the pool gauges are read from the store every
    ``gauge_refresh_s`` seconds by a daemon thread instead of on scrape (docs/METRICS.md)."""
    try:
        import prometheus_client

        from .prometheus import PrometheusRecorder
    except ImportError as exc:
        raise _missing("prometheus", "prometheus_client", exc) from exc
    registry = prometheus_client.REGISTRY if registry is None else registry
    for r in _recorders:
        if isinstance(r, PrometheusRecorder) and r.registry is registry:
            return r
    recorder = PrometheusRecorder(registry, gauge_refresh_s, **bounds)
    _install(recorder)
    return recorder


def enable_otel(meter_provider: Any = None, **bounds: int) -> OtelRecorder:
    """Create cachify's instruments on ``meter_provider``'s meter ``"cachify"`` (default: the
    global provider) and start reporting. ``bounds`` as for :func:`enable_prometheus`."""
    try:
        from .otel import OtelRecorder
    except ImportError as exc:
        raise _missing("otel", "opentelemetry-api", exc) from exc
    recorder = OtelRecorder(meter_provider, **bounds)
    _install(recorder)
    return recorder


def disable() -> None:
    """Stop reporting (the sink goes back to ``None``) and take cachify's Prometheus metrics off
    their registries, so enabling again starts from zero."""
    from .recorder import Recorder as _Recorder

    events.sink = None
    while _recorders:
        r: _Recorder = _recorders.pop()
        unregister = getattr(r, "unregister", None)
        if unregister is not None:
            unregister()
