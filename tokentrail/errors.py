"""The one exception tokentrail lets reach application code."""

from __future__ import annotations

USD = "USD"
CALLS = "calls"


class BudgetExceeded(Exception):
    """An LLM call was stopped before it was sent because it would cross a limit.

    ``limit_name``: which limit (``budget_usd``, ``max_calls``, ``max_usd_per_minute``, or a
    tenant/team budget such as ``tenant:acme/day``); ``limit``: its value; ``spent``: what was
    spent against it so far; ``unit``: ``"USD"``, or ``"calls"`` for ``max_calls``; ``task``: the
    task the stopped call belonged to (None outside a task); ``estimate_usd``: the
    worst-case cost of the stopped call, when known.
    """

    def __init__(self, limit_name: str, *, limit: float, spent: float, unit: str = USD, task: str | None = None,
                 estimate_usd: float | None = None, detail: str | None = None) -> None:
        self.limit_name = limit_name
        self.limit = limit
        self.spent = spent
        self.unit = unit
        self.task = task
        self.estimate_usd = estimate_usd
        where = f"task {task!r}" if task else "LLM call"
        spent_text = f"{int(spent)}" if unit == CALLS else f"{spent:.6f}"
        msg = f"{where} stopped before sending: {limit_name} limit {limit:g} {unit} (spent {spent_text} {unit})"
        if detail:
            msg += f"; {detail}"
        super().__init__(msg)
