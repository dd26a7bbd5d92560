"""Installing the circuit breakers (task limits, tenant and team budgets), explicitly, with the
guard that counts oversized inbound baggage (``tokentrail.trust.BaggageLogGuard``).

Every tokentrail instrumentor's ``instrument()`` and ``InMemoryPipeline`` call ``install()``;
importing a module never installs anything.
"""

from __future__ import annotations

from tokentrail import budgets, preflight, tasks, trust


def install() -> None:
    """Register the breakers with the pre-flight hooks (idempotent)."""
    # tenant/team budgets first: a call they stop is never admitted into its task
    preflight.register(budgets.check, budgets.enforcing)
    preflight.register(tasks.check, tasks.in_task)
    preflight.register_end(budgets.record_spend)
    trust.install_baggage_guard()


def uninstall() -> None:
    """Remove them again: LLM calls are then only recorded, never stopped."""
    preflight.unregister(budgets.check)
    preflight.unregister(tasks.check)
    preflight.unregister_end(budgets.record_spend)
    trust.uninstall_baggage_guard()
