"""The one exception tokentrail lets reach application code."""

from __future__ import annotations

MAX_CALLS = "max_calls"


class BudgetExceeded(Exception):
    """An LLM call was stopped before it was sent because it would cross a limit.

    The one exception tokentrail lets reach application code, on purpose. ``limit`` names the
    limit (budget_usd, max_calls, max_usd_per_minute, ``tenant:acme/day``...), ``spent`` is
    what was spent (USD, or calls for max_calls), ``limit_value`` the limit, ``task`` the task.
    """

    def __init__(self, limit: str, *, spent: float, limit_value: float, task: str | None = None,
                 detail: str | None = None, estimate_usd: float | None = None) -> None:
        self.limit = limit
        self.estimate_usd = estimate_usd  # worst-case cost of the stopped call, when known
        self.spent = spent
        self.limit_value = limit_value
        self.task = task
        where = f"task {task!r}" if task else "LLM call"
        unit = "calls" if limit == MAX_CALLS else "USD"
        spent_text = f"{int(spent)}" if limit == MAX_CALLS else f"{spent:.6f}"
        msg = (f"{where} stopped before sending: {limit} limit {limit_value:g} {unit} "
               f"(spent {spent_text} {unit})")
        if detail:
            msg += f"; {detail}"
        super().__init__(msg)
