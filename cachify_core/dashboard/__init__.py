"""A live web dashboard over :mod:`cachify_core.ops` (the ``dashboard`` extra: Starlette and
uvicorn): pools with their waiting rooms and occupancy history, holds, rate limits and cache
namespaces, updated every second by server-sent events; releases and cache clears when started
with writes allowed. ``cachify dashboard`` serves it (docs/DASHBOARD.md).

* :mod:`.state`: what a page shows, read through ops (no third-party import);
* :mod:`.app`: :func:`~.app.create_app`, the ASGI app (imports Starlette);
* ``static/``: the page, plain HTML/CSS/JS shipped as package data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .state import check_bind, is_loopback

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["check_bind", "create_app", "is_loopback"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
