"""cachify for Dramatiq: ``once_*``, ``pool_*`` and ``cache_*`` options on ``@dramatiq.actor``.

See integrations/dramatiq/README.md. The contract is the task options shared with the Celery
and Taskiq integrations; the lifecycle and every policy decision live in ``cachify_core.tasks``,
and this package only translates Dramatiq's hooks onto them.
"""

from cachify_core.tasks import CachifyDuplicateError, CachifyTaskOptionError

from .envelope import CLAIMED_OPTION, REQUEUES_OPTION
from .errors import CachifyDuplicateMessage, CachifyMessageOptionError, CachifySendError, CachifySetupError
from .hooks import CachifyMiddleware

__all__ = [
    "CLAIMED_OPTION",
    "REQUEUES_OPTION",
    "CachifyDuplicateError",
    "CachifyDuplicateMessage",
    "CachifyMessageOptionError",
    "CachifyMiddleware",
    "CachifySendError",
    "CachifySetupError",
    "CachifyTaskOptionError",
]
