"""cachify for Taskiq: ``once_*``, ``pool_*`` and ``cache_*`` options on ``@broker.task(...)``.

See integrations/taskiq/README.md. The options are the shared contract of docs/TASK_OPTIONS.md;
every decision behind them lives in :mod:`cachify_core.tasks`, and this package only maps
Taskiq's hooks onto a delivery's lifecycle there.
"""

from cachify_core.tasks import CachifyDuplicateError, CachifyTaskOptionError

from .envelope import OPTIONS_LABEL, REQUEUES_LABEL
from .hooks import CachifyMiddleware

__all__ = [
    "OPTIONS_LABEL",
    "REQUEUES_LABEL",
    "CachifyDuplicateError",
    "CachifyMiddleware",
    "CachifyTaskOptionError",
]
