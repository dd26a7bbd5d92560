"""tokentrail: who spent the LLM money, down to the single request."""

from tokentrail.attribution import attribute, owner_span_attributes
from tokentrail.errors import BudgetExceeded
from tokentrail.propagation import extract, inject
from tokentrail.tasks import fallback, retry, task

__all__ = ["attribute", "owner_span_attributes", "task", "retry", "fallback", "inject", "extract",
           "BudgetExceeded"]
