"""tokentrail: who spent the LLM money, down to the single request."""

from tokentrail.attribution import attribute, owner_span_attributes
from tokentrail.budgets import BudgetExceeded
from tokentrail.propagation import extract, inject

__all__ = ["attribute", "owner_span_attributes", "inject", "extract", "BudgetExceeded"]
