"""Installing the pre-flight breakers (task limits, tenant and team budgets), explicitly.

Every tokentrail instrumentor's ``instrument()``, the distro and ``InMemoryPipeline`` call
``install()``; importing a module never installs anything.
"""

from __future__ import annotations

from tokentrail import budgets, preflight


def install() -> None:
    """Register the breakers with the pre-flight hook (idempotent)."""
    preflight.register(budgets.check)
