"""PromQL for the dashboards and alert rules, built from the semconv names (never spelled by hand).

Spend over a window uses ``delta_in``, not ``increase()``: ``increase()`` extrapolates to the window edges
and loses the first value of every series born inside the window (a new tenant's first calls), so it never
equals the bill. ``delta_in`` is exact for cumulative counters (OTLP cumulative sums/histograms as exported by
the Collector): last value in the window minus the last value before it, or the whole value for a series
born in the window; series that reset inside the window (an app restarted under the same
``service.instance.id``) fall back to ``increase()``. Consecutive windows tile, so summing a time series of
``delta_in(..., $__interval)`` gives the range total.
"""

from __future__ import annotations

from tokentrail.dashboards.promnames import label, prom
from tokentrail.semconv import attributes as A
from tokentrail.semconv import metrics as M

# --- label names ------------------------------------------------------------------------------------
TENANT = label(A.TOKENTRAIL_TENANT)
FEATURE = label(A.TOKENTRAIL_FEATURE)
TEAM = label(A.TOKENTRAIL_TEAM)
MODEL = label(A.GEN_AI_REQUEST_MODEL)
PROVIDER = label(A.GEN_AI_PROVIDER_NAME)
OPERATION = label(A.GEN_AI_OPERATION_NAME)
ENVIRONMENT = label(A.DEPLOYMENT_ENVIRONMENT_NAME)
ATTRIBUTED = label(A.TOKENTRAIL_ATTRIBUTED)
TOKEN_TYPE = label(A.TOKENTRAIL_TOKEN_TYPE)
ERROR_TYPE = label(A.ERROR_TYPE)
TASK_NAME = label(A.TOKENTRAIL_TASK_NAME)
TASK_OUTCOME = label(A.TOKENTRAIL_TASK_OUTCOME)
BUDGET_WINDOW = label(A.TOKENTRAIL_BUDGET_WINDOW)

# --- metric family names ----------------------------------------------------------------------------
COST = prom(M.TOKENTRAIL_COST)  # histogram: _bucket/_sum/_count
TOKENS = prom(M.TOKENTRAIL_TOKENS)
UNPRICED = prom(M.TOKENTRAIL_CALLS_UNPRICED)
DURATION = prom(M.GEN_AI_CLIENT_OPERATION_DURATION)
TASK_COST = prom(M.TOKENTRAIL_TASK_COST)
TASK_ITERATIONS = prom(M.TOKENTRAIL_TASK_ITERATIONS)
CACHE_SAVINGS = prom(M.TOKENTRAIL_CACHE_SAVINGS)
RETRY_COST = prom(M.TOKENTRAIL_COST_RETRIES)
FALLBACK_COST = prom(M.TOKENTRAIL_COST_FALLBACKS)
BUDGET_LIMIT = prom(M.TOKENTRAIL_BUDGET_LIMIT)
BUDGET_SPENT = prom(M.TOKENTRAIL_BUDGET_SPENT)
PLAN_BURN = prom(M.TOKENTRAIL_PLAN_BURN)  # margin budgets: spend over the window's plan revenue

# Token types on tokentrail.tokens (values of tokentrail.token.type).
INPUT_TYPES = "input|cache_read|cache_write"

# Grafana's own range/interval variables.
RANGE = "$__range"
INTERVAL = "$__interval"

# Dashboard variable filters (multi-value, "All" = ".*", which also matches a missing label).
OWNER_VARS = {TENANT: "$tenant", FEATURE: "$feature", TEAM: "$team", MODEL: "$model", ENVIRONMENT: "$environment"}
ENV_VARS = {ENVIRONMENT: "$environment"}


def matchers(variables: dict[str, str] | None = None, **exact: str) -> str:
    parts = [f'{k}=~"{v}"' for k, v in (variables or {}).items()]
    parts += [f'{k}="{v}"' if not v.startswith("~") else f'{k}=~"{v[1:]}"' for k, v in exact.items()]
    return "{" + ",".join(parts) + "}" if parts else ""


def delta_in(series: str, window: str) -> str:
    """Exact growth of a cumulative counter ``series`` (a selector) over ``window``; see module doc."""
    last = f"last_over_time({series}[{window}])"
    return (f"((({last} - {series} offset {window}) or {last}) unless resets({series}[{window}]) > 0)"
            f" or increase({series}[{window}])")


def previous_spend(window: str = RANGE, variables: dict[str, str] | None = None) -> str:
    """Spend in the window before this one. PromQL cannot offset by 2x a Grafana duration, so this one is
    ``increase()`` (extrapolated, a few percent off): fine for a trend percentage, never used for totals."""
    return f"sum(increase({COST}_sum{matchers(variables)}[{window}] offset {window}))"


def spend(by: str | None = None, window: str = RANGE, variables: dict[str, str] | None = None,
          **exact: str) -> str:
    """USD spent in ``window``, optionally summed by labels ``by`` (comma-separated)."""
    inner = delta_in(f"{COST}_sum{matchers(variables, **exact)}", window)
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def counter_usd(family: str, by: str | None = None, window: str = RANGE,
                variables: dict[str, str] | None = None) -> str:
    """USD of a cumulative USD counter (retries, fallbacks) in ``window``; 0 when there was none."""
    inner = delta_in(f"{family}{matchers(variables)}", window)
    return f"(sum by ({by}) ({inner}))" if by else f"(sum({inner}) or vector(0))"


def calls(by: str | None = None, window: str = RANGE, variables: dict[str, str] | None = None, **exact: str) -> str:
    """Priced LLM calls in ``window``."""
    inner = delta_in(f"{COST}_count{matchers(variables, **exact)}", window)
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def tokens(token_types: str, by: str | None = None, window: str = RANGE,
           variables: dict[str, str] | None = None) -> str:
    inner = delta_in(f"{TOKENS}{matchers(variables, **{TOKEN_TYPE: '~' + token_types})}", window)
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def cache_hit_ratio(by: str | None = None, window: str = RANGE, variables: dict[str, str] | None = None) -> str:
    """Cache-read share of all input tokens (uncached + cache read + cache write), 0..1."""
    return f"{tokens('cache_read', by, window, variables)} / {tokens(INPUT_TYPES, by, window, variables)}"


def quantile_cost(q: float, family: str = COST, window: str = RANGE, variables: dict[str, str] | None = None,
                  by: str | None = None) -> str:
    keep = f"le,{by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({keep}) ({delta_in(f'{family}_bucket{matchers(variables)}', window)}))"
