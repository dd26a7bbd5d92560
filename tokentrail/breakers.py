"""Installing the circuit breakers (task limits, tenant and team budgets), explicitly.

Every tokentrail instrumentor's ``instrument()`` and ``InMemoryPipeline`` call ``install()``;
importing a module never installs anything.
"""

from __future__ import annotations

from tokentrail import budgets, preflight, tasks


def install() -> None:
    """Register the breakers with the pre-flight hooks (idempotent)."""
    # tenant/team budgets first: a call they stop is never admitted into its task
    preflight.register(budgets.check)
    preflight.register(tasks.check)
    preflight.register_end(budgets.record_spend)


def uninstall() -> None:
    """Remove them again: LLM calls are then only recorded, never stopped."""
    preflight.unregister(budgets.check)
    preflight.unregister(tasks.check)
    preflight.unregister_end(budgets.record_spend)
