"""cachify for Taskiq: ``once_*``, ``pool_*`` and ``cache_*`` options on ``@broker.task(...)``.

See integrations/taskiq/README.md. The options are the shared contract of docs/TASK_OPTIONS.md;
the policy behind them lives in :mod:`cachify_core.tasks`, and this package only maps
Taskiq's hooks onto it.
"""

from cachify_core.tasks import CachifyDuplicateError, CachifyTaskOptionError

from .labels import REQUEUES_LABEL
from .middleware import CachifyMiddleware

__all__ = ["REQUEUES_LABEL", "CachifyDuplicateError", "CachifyMiddleware", "CachifyTaskOptionError"]
