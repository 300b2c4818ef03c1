"""The task layer shared by the Celery, Dramatiq and Taskiq integrations (docs/TASK_OPTIONS.md).

* :mod:`.options` — the task options, parsed and validated at declaration.
* :mod:`.overrides` — per-message overrides: one parser, one cache, one meaning.
* :mod:`.policy` — what each option means, as backend steps (claim, admit, finish).
* :mod:`.delivery` — one delivery's lifecycle: which of those steps happen on which event.
* :mod:`.envelope` — the fields cachify carries in a message.
* :mod:`.handover` — publishing a waiting room's hand-overs; the worker's sweeper.
* :mod:`.logs` — the log vocabulary.
"""

from .delivery import Delivery, Publish, State, is_retry_of
from .envelope import (
    OPTIONS_FIELD,
    ORIGIN_FIELD,
    REQUEUES_FIELD,
    RESERVATION_FIELD,
    delivery_name,
    read_origin,
    read_overrides,
    read_requeues,
    read_reservation,
    write_overrides,
)
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
from .overrides import TaskPolicies, split_overrides
from .policy import Admission, CachifyDuplicateError, Claim, Outcome, RunHandle, TaskPolicy, Verdict

__all__ = [
    "DEFAULT_ONCE_TTL_S",
    "DEFAULT_POOL_BACKOFF_S",
    "DEFAULT_POOL_SLOT_TTL_S",
    "OPTIONS_FIELD",
    "OPTION_NAMES",
    "ORIGIN_FIELD",
    "REQUEUES_FIELD",
    "RESERVATION_FIELD",
    "Admission",
    "CachifyDuplicateError",
    "CachifyTaskOptionError",
    "Claim",
    "Delivery",
    "Outcome",
    "Publish",
    "RunHandle",
    "State",
    "TaskOptions",
    "TaskPolicies",
    "TaskPolicy",
    "Verdict",
    "delivery_name",
    "is_retry_of",
    "is_task_option",
    "parse_task_options",
    "read_origin",
    "read_overrides",
    "read_requeues",
    "read_reservation",
    "split_overrides",
    "write_overrides",
]
