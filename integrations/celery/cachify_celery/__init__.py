"""cachify for Celery: ``once_*``, ``pool_*`` and ``cache_*`` task options on real workers.

    from celery import Celery
    from cachify_core import init_cachify
    from cachify_celery import CachifyTask

    app = Celery("shop", broker=..., backend=..., task_cls=CachifyTask)   # or install(app)
    init_cachify(url="redis://localhost:6379/0")

    @app.task(once_key="check-order-{order_id}")
    def check_order(order_id): ...

The options and their meaning are shared with the Dramatiq and Taskiq integrations
(docs/TASK_OPTIONS.md); the policy lives in :mod:`cachify_core.tasks`. See
integrations/celery/README.md.
"""

from cachify_core.errors import CachifyPoolFullError
from cachify_core.tasks import CachifyDuplicateError, CachifyTaskOptionError

from . import worker_signals
from .headers import OPTIONS_HEADER, REQUEUES_HEADER
from .install import install
from .task import CachifyTask

worker_signals.connect()

__all__ = [
    "OPTIONS_HEADER",
    "REQUEUES_HEADER",
    "CachifyDuplicateError",
    "CachifyPoolFullError",
    "CachifyTask",
    "CachifyTaskOptionError",
    "install",
]
