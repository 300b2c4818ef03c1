"""Task policy shared by the Celery, Dramatiq and Taskiq integrations (docs/TASK_OPTIONS.md)."""

from .options import (
    DEFAULT_ONCE_TTL_S,
    DEFAULT_POOL_BACKOFF_S,
    DEFAULT_POOL_SLOT_TTL_S,
    OPTION_NAMES,
    CachifyTaskOptionError,
    TaskOptions,
    is_task_option,
    parse_task_options,
)
from .policy import Admission, CachifyDuplicateError, Claim, Outcome, RunHandle, TaskPolicy, Verdict

__all__ = [
    "DEFAULT_ONCE_TTL_S",
    "DEFAULT_POOL_BACKOFF_S",
    "DEFAULT_POOL_SLOT_TTL_S",
    "OPTION_NAMES",
    "Admission",
    "CachifyDuplicateError",
    "CachifyTaskOptionError",
    "Claim",
    "Outcome",
    "RunHandle",
    "TaskOptions",
    "TaskPolicy",
    "Verdict",
    "is_task_option",
    "parse_task_options",
]
