"""cachify for Dramatiq: ``once_*``, ``pool_*`` and ``cache_*`` options on ``@dramatiq.actor``.

See integrations/dramatiq/README.md. The contract is the task options shared with the Celery
and Taskiq integrations; the policy lives in ``cachify_core.tasks``.
"""

from cachify_core.tasks import CachifyDuplicateError, CachifyTaskOptionError

from .errors import CachifyDuplicateMessage, CachifyMessageOptionError, CachifySendError
from .middleware import CachifyMiddleware
from .options import CLAIMED_OPTION, REQUEUES_OPTION

__all__ = [
    "CLAIMED_OPTION",
    "REQUEUES_OPTION",
    "CachifyDuplicateError",
    "CachifyDuplicateMessage",
    "CachifyMessageOptionError",
    "CachifyMiddleware",
    "CachifySendError",
    "CachifyTaskOptionError",
]
