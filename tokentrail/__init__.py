"""tokentrail: who spent the LLM money, down to the single request.

Scopes, each a ``with`` block, an ``async with`` block and a decorator (sync and async):
``attribute(*, tenant=, feature=, team=, user=)`` names the owner, ``task(name, id=None, *,
budget_usd=, max_calls=, max_usd_per_minute=, agent=)`` a unit of work with its limits,
``retry(attempt)`` and ``fallback(from_model)`` mark the LLM calls inside. ``with ... as x``
gives the scope object itself, except for ``task``, which gives the run's ``TaskState``
(its calls, cost and outcome so far; one task object is entered once per run).

Across hops: ``inject``/``extract``/``consuming`` for message headers, ``wrap`` for threads,
``environ``/``attach_from_environ`` for subprocesses.
"""

from tokentrail.attribution import attribute, current_owner, owner_span_attributes
from tokentrail.errors import BudgetExceeded
from tokentrail.propagation import attach_from_environ, consuming, environ, extract, inject, wrap
from tokentrail.tasks import fallback, retry, task

__all__ = [
    "BudgetExceeded",
    "attach_from_environ",
    "attribute",
    "consuming",
    "current_owner",
    "environ",
    "extract",
    "fallback",
    "inject",
    "owner_span_attributes",
    "retry",
    "task",
    "wrap",
]
