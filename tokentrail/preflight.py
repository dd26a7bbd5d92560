"""The pre-flight hook every instrumentation calls before it sends a request.

Instrumentations describe the call they are about to make as a ``PlannedCall``; checks
registered here (task budgets, call limits, tenant budgets) may raise
``tokentrail.BudgetExceeded`` to stop it before it is sent and paid for. This is the one
exception tokentrail deliberately lets reach the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True, slots=True)
class PlannedCall:
    provider: str
    model: str
    estimated_input_tokens: int
    max_output_tokens: int | None
    operation: str = "chat"
    service_tier: str | None = None


_checks: list[Callable[[PlannedCall], None]] = []


def register(check: Callable[[PlannedCall], None]) -> None:
    if check not in _checks:
        _checks.append(check)


def check(planned: PlannedCall) -> None:
    """Run every registered check; a check raises to stop the call."""
    for registered in _checks:
        registered(planned)


def estimate_tokens(text_chars: int) -> int:
    """A deliberately generous token estimate from a character count (about 3 chars/token)."""
    return text_chars // 3 + 1
