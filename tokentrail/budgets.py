"""Circuit breakers: stop an LLM call before it is sent when it would cross a limit."""

from __future__ import annotations


class BudgetExceeded(Exception):
    """An LLM call was stopped before it was sent because it would cross a limit.

    The one exception tokentrail lets reach application code, on purpose.
    """

    def __init__(self, limit: str, *, spent_usd: float, limit_value: float, task: str | None = None,
                 detail: str | None = None) -> None:
        self.limit = limit
        self.spent_usd = spent_usd
        self.limit_value = limit_value
        self.task = task
        where = f"task {task!r}" if task else "this call"
        msg = f"{where}: {limit} limit {limit_value:g} would be exceeded (spent so far {spent_usd:.6f} USD)"
        if detail:
            msg += f"; {detail}"
        super().__init__(msg)
