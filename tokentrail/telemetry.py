"""tokentrail's own telemetry: task spans, and the task, trust and budget metrics.

They go to the global providers unless ``use_providers`` names others (``InMemoryPipeline``,
the demo, an app with its own providers). LLM-call spans and cost metrics are not made here:
the instrumentations and processors get their providers as OpenTelemetry intends.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

from opentelemetry import metrics as metrics_api
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation

from tokentrail.semconv import metrics as names
from tokentrail.state import register_reset

SCOPE = "tokentrail"

#: A task is many calls: buckets from a tenth of a cent to a $250 runaway.
TASK_COST_BUCKETS_USD = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0,
                         100.0, 250.0)
#: Calls per task (iteration count): p50/p95 on the dashboards, a runaway loop in the top buckets.
TASK_CALLS_BUCKETS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233)

Observer = Callable[[CallbackOptions], Iterable[Observation]]

_lock = threading.Lock()
# The providers are configuration (set and restored by their user), not remembered state:
# tokentrail.state.reset() leaves them alone.
_tracer_provider: Any = None
_meter_provider: Any = None
# Instruments of the current meter provider, by name; emptied when the provider changes.
_instruments: dict[str, Any] = {}


def use_providers(tracer_provider: Any = None, meter_provider: Any = None) -> tuple[Any, Any]:
    """Send tokentrail's own spans and metrics to these providers (None: the global ones).

    Returns the previous pair, so a caller can restore it.
    """
    global _tracer_provider, _meter_provider
    with _lock:
        previous = (_tracer_provider, _meter_provider)
        _tracer_provider, _meter_provider = tracer_provider, meter_provider
        if meter_provider is not previous[1]:
            _instruments.clear()
    return previous


@register_reset
def _forget_instruments() -> None:
    with _lock:
        _instruments.clear()


def tracer() -> trace.Tracer:
    return trace.get_tracer(SCOPE, tracer_provider=_tracer_provider)


def _instrument(kind: str, name: str, unit: str, description: str, **kwargs: Any) -> Any:
    found = _instruments.get(name)
    if found is None:
        # the global provider is a proxy until the app sets one; its instruments follow it then
        meter = metrics_api.get_meter(SCOPE, meter_provider=_meter_provider or metrics_api.get_meter_provider())
        found = getattr(meter, f"create_{kind}")(name, unit=unit, description=description, **kwargs)
        _instruments[name] = found  # created twice in a race: the SDK returns the same instrument
    return found


def task_cost() -> Any:
    return _instrument("histogram", names.TOKENTRAIL_TASK_COST, "USD", "Cost of one task run in USD",
                       explicit_bucket_boundaries_advisory=TASK_COST_BUCKETS_USD)


def task_iterations() -> Any:
    return _instrument("histogram", names.TOKENTRAIL_TASK_ITERATIONS, "{call}", "LLM calls per task run",
                       explicit_bucket_boundaries_advisory=TASK_CALLS_BUCKETS)


def attribution_rejected() -> Any:
    return _instrument("counter", names.TOKENTRAIL_ATTRIBUTION_REJECTED, "{value}",
                       "Inbound baggage attribution ignored at the trust boundary")


def budget_blocked() -> Any:
    return _instrument("counter", names.TOKENTRAIL_BUDGET_BLOCKED, "{call}",
                       "LLM calls stopped before sending by a breaker")


def budget_warnings() -> Any:
    return _instrument("counter", names.TOKENTRAIL_BUDGET_WARNINGS, "{warning}", "Budget warning thresholds crossed")


def budget_store_errors() -> Any:
    return _instrument("counter", names.TOKENTRAIL_BUDGET_STORE_ERRORS, "{error}", "Budget store failures")


def usage_implausible() -> Any:
    return _instrument("counter", names.TOKENTRAIL_USAGE_IMPLAUSIBLE, "{report}",
                       "Usage reports rejected as implausible (no_usage)")


def observe_budgets(limits: Observer, spent: Observer) -> None:
    """Register the budget gauges (limit and spent) with these callbacks, once per meter provider."""
    _instrument("observable_gauge", names.TOKENTRAIL_BUDGET_LIMIT, "USD", "Configured tenant/team budget",
                callbacks=[limits])
    _instrument("observable_gauge", names.TOKENTRAIL_BUDGET_SPENT, "USD",
                "Spend counted against a budget in its current window", callbacks=[spent])


def notify_failures() -> Any:
    return _instrument("counter", names.TOKENTRAIL_NOTIFY_FAILURES, "{notification}",
                       "Budget warnings not delivered to the webhook")


def observe_plan_burn(burn: Observer) -> None:
    """Register the margin budgets' burn gauge (spend over plan revenue), once per meter provider."""
    _instrument("observable_gauge", names.TOKENTRAIL_PLAN_BURN, "1",
                "Spend in a margin budget's window over the tenant's plan revenue for it", callbacks=[burn])
