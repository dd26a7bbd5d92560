"""The three tokentrail dashboards, as code (grafana-foundation-sdk builders).

    python -m tokentrail.dashboards.build            # regenerate dashboards/json/*.json
    python -m tokentrail.dashboards.build --check    # exit 1 if the committed JSON is stale

Every PromQL expression comes from ``tokentrail.dashboards.queries`` (semconv names through the Collector's
Prometheus naming); TraceQL attribute names come from ``tokentrail.semconv.attributes``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    from grafana_foundation_sdk.builders import bargauge, common as cb, dashboard as db, heatmap, prometheus, stat
    from grafana_foundation_sdk.builders import table, tempo, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common as cm
    from grafana_foundation_sdk.models import dashboard as dm
    from grafana_foundation_sdk.models import prometheus as pm
except ImportError as exc:  # the builders are a development tool; the shipped JSON needs none of this
    message = ("rebuilding the dashboards from code needs grafana-foundation-sdk: pip install 'tokentrail[grafana]'"
               " (tokentrail dashboards generate writes the shipped JSON without it)")
    if __name__ == "__main__":
        raise SystemExit(message) from None
    raise ImportError(message) from exc

from tokentrail.dashboards import queries as q
from tokentrail.semconv import attributes as A

JSON_DIR = Path(__file__).resolve().parent / "json"

PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="tokentrail-prometheus")
TEMPO = dm.DataSourceRef(type_val="tempo", uid="tokentrail-tempo")

UID_OVERVIEW = "tokentrail-overview"
UID_OWNER = "tokentrail-owner"
UID_EXPENSIVE = "tokentrail-expensive"

USD = "currencyUSD"
PERCENT = "percent"
TOKENS = "suffix: tokens"
CALLS = "short"

GREEN, YELLOW, ORANGE, RED = "green", "yellow", "orange", "red"


# --- small helpers ----------------------------------------------------------------------------------
def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(value=v, color=c) for v, c in steps]))


def promq(expr: str, ref: str = "A", legend: str | None = None, instant: bool = False,
          table_format: bool = False, exemplar: bool = False, heatmap_format: bool = False) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(PROMETHEUS)
    target = target.instant() if instant else target.range()
    if legend:
        target = target.legend_format(legend)
    if table_format:
        target = target.format(pm.PromQueryFormat.TABLE)
    if heatmap_format:
        target = target.format(pm.PromQueryFormat.HEATMAP)
    if exemplar:
        target = target.exemplar(True)
    return target


def traceql(query: str, ref: str = "A", limit: int = 20) -> tempo.TempoQuery:
    return (tempo.TempoQuery().ref_id(ref).query_type("traceql").query(query).limit(limit)
            .datasource(TEMPO))


def stat_panel(title: str, description: str, targets, unit: str, steps, w: int = 6, h: int = 5,
               graph: bool = False, decimals: int | None = None, no_value: str = "0") -> stat.Panel:
    """``no_value``: what an empty result means ("0" for sums and counts, "no data" for ratios and quantiles)."""
    panel = (stat.Panel().title(title).description(description).datasource(PROMETHEUS).unit(unit)
             .thresholds(thresholds(*steps)).span(w).height(h)
             .graph_mode(cm.BigValueGraphMode.AREA if graph else cm.BigValueGraphMode.NONE)
             .color_mode(cm.BigValueColorMode.VALUE)
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .no_value(no_value))
    if decimals is not None:
        panel = panel.decimals(decimals)
    for t in targets:
        panel = panel.with_target(t)
    return panel


def ts_panel(title: str, description: str, targets, unit: str, w: int = 12, h: int = 8, stack: bool = False,
             steps=((None, GREEN),)) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(PROMETHEUS).unit(unit)
             .span(w).height(h).fill_opacity(20).thresholds(thresholds(*steps))
             .legend(cb.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.TABLE)
                     .placement(cm.LegendPlacement.BOTTOM).calcs(["sum", "max"])))
    if stack:
        panel = panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    for t in targets:
        panel = panel.with_target(t)
    return panel


def owner_link(field: str, var: str) -> db.DashboardLink:
    """Data link from a tenant/feature cell to the Expensive requests view filtered on it."""
    return (db.DashboardLink(f"Expensive requests for this {var}")
            .url(f"/d/{UID_EXPENSIVE}/tokentrail-expensive-requests?${{__url_time_range}}"
                 f"&var-{var}=${{__data.fields.{field}}}")
            .type(dm.DashboardLinkType.LINK))


def table_panel(title: str, description: str, targets, unit: str, w: int = 8, h: int = 8,
                links: list[db.DashboardLink] | None = None, steps=((None, GREEN),)) -> table.Panel:
    panel = (table.Panel().title(title).description(description).datasource(PROMETHEUS).unit(unit)
             .span(w).height(h).thresholds(thresholds(*steps))
             .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
             .with_transformation(dm.DataTransformerConfig(
                 id_val="organize", options={"excludeByName": {"Time": True}}))
             .sort_by([cb.TableSortByFieldState().display_name("Value").desc(True)]))
    if links:
        panel = panel.data_links(links)
    for t in targets:
        panel = panel.with_target(t)
    return panel


def query_var(name: str, lbl: str, metric_label: str, metric: str) -> db.QueryVariable:
    return (db.QueryVariable(name).label(lbl).datasource(PROMETHEUS)
            .query(f"label_values({metric}, {metric_label})")
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True).include_all(True).all_value(".*")
            .current(dm.VariableOption(selected=True, text="All", value="$__all"))
            .sort(dm.VariableSort.ALPHABETICAL_ASC))


def env_var() -> db.QueryVariable:
    return query_var("environment", "Environment", q.ENVIRONMENT, f"{q.COST}_count")


def _base(title: str, uid: str, description: str, tags: list[str]) -> db.Dashboard:
    return (db.Dashboard(title).uid(uid).description(description).tags(["tokentrail", *tags])
            .time("now-7d", "now").refresh("5m").timezone("browser").editable()
            .tooltip(dm.DashboardCursorSync.CROSSHAIR)
            .link(db.DashboardLink("tokentrail").type(dm.DashboardLinkType.DASHBOARDS).tags(["tokentrail"])
                  .as_dropdown(True).include_vars(False).keep_time(True)))


# --- 1. LLM cost overview ---------------------------------------------------------------------------
def overview() -> db.Dashboard:
    env = q.ENV_VARS
    spend_all = q.spend(variables=env)
    d = _base("tokentrail: LLM cost overview", UID_OVERVIEW,
              "Where the LLM money goes: totals, trend, owners, and the spend nobody owns.", ["cost"])
    d = d.with_variable(env_var())
    d = d.with_row(db.Row("Spend"))
    d = d.with_panel(stat_panel(
        "Total spend", "USD spent on priced LLM calls in the selected range (exact, from cumulative counters). "
        "If it is red, spend exceeded $1,000 in the range: open 'Top tenants' and 'Spend by provider and model' "
        "to find who and what drove it.",
        [promq(spend_all, instant=True)], USD, [(None, GREEN), (500, YELLOW), (1000, RED)], graph=False))
    d = d.with_panel(stat_panel(
        "Change against previous period", "Spend in this range against the same-length range before it. "
        "Red means spend grew by more than 25%: compare 'Spend by provider and model' with the previous range and "
        "check the 'Spend-rate spike' alert.",
        [promq(f"100 * ({spend_all} / {q.previous_spend(variables=env)} - 1)", instant=True)],
        PERCENT, [(None, GREEN), (10, YELLOW), (25, RED)], decimals=1, no_value="no data"))
    d = d.with_panel(stat_panel(
        "Unattributed share", "Share of spend with no tenant (scripts, CI, staging without owner tags). Never hidden. "
        "Red above 10%: find the callers in 'Expensive requests' (tenant filter empty) and wrap them in "
        "tokentrail.attribute(...).",
        [promq(f"100 * (({q.spend(variables=env, **{q.ATTRIBUTED: 'false'})}) or vector(0)) / {spend_all}",
               instant=True)],
        PERCENT, [(None, GREEN), (5, YELLOW), (10, RED)], decimals=1, no_value="no data"))
    d = d.with_panel(stat_panel(
        "Unpriced calls", "LLM calls whose model is not on the rate card: their cost is missing from every total "
        "(never counted as $0). Red at 1 or more: add the model to the price overlay, then re-price from the ledger.",
        [promq(f"sum({q.delta_in(f'{q.UNPRICED}{q.matchers(env)}', q.RANGE)}) or vector(0)", instant=True)],
        CALLS, [(None, GREEN), (1, RED)], decimals=0))
    d = d.with_panel(ts_panel(
        "Spend over time", "USD per interval, by provider. A step up that stays up is a new workload or a price "
        "change; a spike that comes back down is usually a loop or a retry storm: open 'Expensive requests'.",
        [promq(q.spend(q.PROVIDER, q.INTERVAL, env), legend=f"{{{{{q.PROVIDER}}}}}")], USD, w=24, stack=True))
    d = d.with_row(db.Row("Who and what"))
    d = d.with_panel(table_panel(
        "Spend by provider and model", "USD by provider and requested model in the range. A pricier model high in "
        "this list that nobody chose is often a silent fallback: check requested vs response model in the traces.",
        [promq(q.spend(f"{q.PROVIDER},{q.MODEL}", variables=env), instant=True, table_format=True)], USD, w=12))
    d = d.with_panel(table_panel(
        "Top tenants", "The ten tenants with the highest spend in the range; click a tenant for its most expensive "
        "requests. A tenant far above its plan price is burning your margin: set a tenant budget.",
        [promq(f"topk(10, {q.spend(q.TENANT, variables=env)})", instant=True, table_format=True)], USD, w=12,
        links=[owner_link(q.TENANT, "tenant")]))
    d = d.with_panel(table_panel(
        "Top features", "The ten features with the highest spend; click one for its most expensive requests. "
        "A feature growing faster than its traffic is prompt inflation: check input tokens per request.",
        [promq(f"topk(10, {q.spend(q.FEATURE, variables=env)})", instant=True, table_format=True)], USD, w=12,
        links=[owner_link(q.FEATURE, "feature")]))
    d = d.with_panel(table_panel(
        "Top teams", "The ten teams with the highest spend (showback). Teams over budget show in the "
        "'Budget' alerts and the Owner drill-down.",
        [promq(f"topk(10, {q.spend(q.TEAM, variables=env)})", instant=True, table_format=True)], USD, w=12))
    d = d.with_row(db.Row("Efficiency"))
    d = d.with_panel(stat_panel(
        "Cache-hit ratio", "Cache-read input tokens as a share of all input tokens. Red below 30%: prompts are "
        "not cache-friendly (changing prefix, short TTL); see 'Cache-hit dispersion' in the Owner drill-down.",
        [promq(f"100 * {q.cache_hit_ratio(variables=env)}", instant=True)],
        PERCENT, [(None, RED), (30, YELLOW), (60, GREEN)], decimals=1, no_value="no data"))
    d = d.with_panel(stat_panel(
        "Cache-read tokens", "Input tokens served from the provider's prompt cache in the range (billed at 10-50% "
        "of fresh input). If this drops while traffic holds, a prompt change broke caching.",
        [promq(q.tokens("cache_read", variables=env), instant=True)], TOKENS, [(None, GREEN)]))
    d = d.with_panel(stat_panel(
        "Reasoning share of output", "Reasoning tokens as a share of all output tokens (reasoning is billed as "
        "output). Red above 70%: a reasoning effort higher than the task needs; lower it for that feature.",
        [promq(f"100 * ({q.tokens('reasoning', variables=env)} or vector(0)) / {q.tokens('output', variables=env)}",
               instant=True)],
        PERCENT, [(None, GREEN), (50, YELLOW), (70, RED)], decimals=1, no_value="no data"))
    d = d.with_panel(stat_panel(
        "Priced calls", "LLM calls priced in the range. Compare with 'Unpriced calls': every call is one or "
        "the other, or reported no usage.",
        [promq(q.calls(variables=env), instant=True)], CALLS, [(None, GREEN)], decimals=0))
    d = d.with_panel(stat_panel(
        "Retries share of spend", "Share of spend on calls that were retries (an SDK retry after a 429/5xx, or "
        "the app asking again after a bad answer). Red above 10%: a retry loop re-sending the full context, or a "
        "job retrying before the rate-limit cooldown; open 'Most expensive tasks' and look at the retry column.",
        [promq(f"100 * {q.counter_usd(q.RETRY_COST, variables=env)} / {spend_all}", instant=True)],
        PERCENT, [(None, GREEN), (5, YELLOW), (10, RED)], decimals=1, no_value="no data"))
    d = d.with_panel(stat_panel(
        "Fallbacks share of spend", "Share of spend on fallback calls (another model after the first one failed). "
        "Red above 10%: traffic is silently running on the fallback model, priced differently from what budgets "
        "assume; fix the primary model's errors.",
        [promq(f"100 * {q.counter_usd(q.FALLBACK_COST, variables=env)} / {spend_all}", instant=True)],
        PERCENT, [(None, GREEN), (5, YELLOW), (10, RED)], decimals=1, no_value="no data"))
    d = d.with_panel(_retry_fallback_panel())
    d = d.with_panel(stat_panel(
        "Dollars saved by cache", "USD the prompt cache saved in the range: cache-read tokens at the fresh input "
        "price minus what they cost (each call priced at its time). If this is low while spend is high, "
        "prompts are not cache-friendly (a prefix that changes per request): check the cache-hit ratio by "
        "tenant in the Owner drill-down.",
        [promq(q.counter_usd(q.CACHE_SAVINGS, variables=env), instant=True)], USD, [(None, GREEN)], decimals=2))
    return d


def _retry_fallback_panel() -> table.Panel:
    # Which tasks: retry and fallback markers are span attributes (not metric labels: bounded cardinality).
    sel = ", ".join(f"span.{a}" for a in (A.TOKENTRAIL_TASK_COST_TOTAL, A.TOKENTRAIL_TASK_COST_RETRIES,
                                           A.TOKENTRAIL_TASK_COST_FALLBACKS, A.TOKENTRAIL_TASK_NAME,
                                           A.TOKENTRAIL_TENANT))
    query = (f"{{ span.{A.TOKENTRAIL_TASK_COST_RETRIES} > 0 || span.{A.TOKENTRAIL_TASK_COST_FALLBACKS} > 0 }}"
             f" | select({sel})")
    return (table.Panel().title("Tasks with retry or fallback spend")
            .description("Task runs whose cost includes retried attempts or fallback calls, from Tempo task spans, "
                         "with their owner; the footer sums the columns. Red rows (over $1): a retry loop "
                         "re-sending the full context, or traffic silently routed to a pricier model: open the "
                         "trace.")
            .datasource(TEMPO).with_target(traceql(query, limit=100)).unit(USD).span(24).height(8)
            .thresholds(thresholds((None, GREEN), (1, RED)))
            .footer(cb.TableFooterOptions().show(True).reducer(["sum"])))


# --- 2. Owner drill-down ----------------------------------------------------------------------------
def owner() -> db.Dashboard:
    v = q.OWNER_VARS
    d = _base("tokentrail: Owner drill-down", UID_OWNER,
              "One tenant, feature, team, model or environment: spend, unit costs, tasks, cache and budget.",
              ["cost", "owner"])
    for name, lbl, metric_label in (("tenant", "Tenant", q.TENANT), ("feature", "Feature", q.FEATURE),
                                    ("team", "Team", q.TEAM), ("model", "Model", q.MODEL)):
        d = d.with_variable(query_var(name, lbl, metric_label, f"{q.COST}_count"))
    d = d.with_variable(env_var())
    d = d.with_row(db.Row("Spend"))
    d = d.with_panel(stat_panel(
        "Spend in range", "USD spent by the selection in the range. Red above $1,000: look at 'Spend over time' "
        "for when it happened, then 'Expensive requests'.",
        [promq(q.spend(variables=v), instant=True)], USD, [(None, GREEN), (500, YELLOW), (1000, RED)]))
    d = d.with_panel(stat_panel(
        "Cost per request p50", "Median USD per priced LLM call (from the cost histogram buckets).",
        [promq(q.quantile_cost(0.5, variables=v), instant=True)], USD, [(None, GREEN)], decimals=4, no_value="no data"))
    d = d.with_panel(stat_panel(
        "Cost per request p95", "95th percentile USD per call. Red above $0.50: a few requests carry huge "
        "contexts (long-context price tier, unbounded history): open 'Expensive requests'.",
        [promq(q.quantile_cost(0.95, variables=v), instant=True)], USD,
        [(None, GREEN), (0.1, YELLOW), (0.5, RED)], decimals=4, no_value="no data"))
    attributed = {q.TENANT: "~.+"}
    d = d.with_panel(stat_panel(
        "Average cost per active tenant per day", "Attributed spend divided by tenants with at least one priced call, per "
        "day of the range: the marginal LLM cost of one more customer. Red above $5/day: compare with the plan "
        "price (a $19/month plan cannot carry it).",
        [promq(f"{q.spend(variables=v, **attributed)} / count({q.calls(q.TENANT, variables=v, **attributed)} > 0)"
               " / ($__range_s / 86400)",
               instant=True)], USD, [(None, GREEN), (1, YELLOW), (5, RED)], decimals=4, no_value="no data"))
    d = d.with_panel(ts_panel(
        "Spend over time by tenant and feature", "USD per interval. A tenant whose line keeps climbing with flat "
        "traffic has prompt inflation or a loop.",
        [promq(q.spend(f"{q.TENANT},{q.FEATURE}", q.INTERVAL, v), legend=f"{{{{{q.TENANT}}}}} / {{{{{q.FEATURE}}}}}")],
        USD, w=24, stack=True))
    d = d.with_panel(ts_panel(
        "Cost per tenant per day", "USD per tenant per calendar day (1-day steps): the marginal cost of each "
        "active tenant. Red above $5/day.",
        [promq(q.spend(q.TENANT, "1d", v), legend=f"{{{{{q.TENANT}}}}}")], USD, w=24,
        steps=((None, GREEN), (5, RED))).interval("1d"))
    d = d.with_row(db.Row("Tasks"))
    d = d.with_panel(stat_panel(
        "Cost per task p50", "Median USD per task run (tokentrail.task), from the task cost histogram.",
        [promq(q.quantile_cost(0.5, q.TASK_COST, variables=v), instant=True)], USD, [(None, GREEN)], decimals=4, no_value="no data"))
    d = d.with_panel(stat_panel(
        "Cost per task p95", "95th percentile USD per task run. Red above $1: an agent loop (calls per task "
        "high) or a context that keeps growing; see the 'Per-task cost p95' alert and the task traces.",
        [promq(q.quantile_cost(0.95, q.TASK_COST, variables=v), instant=True)], USD,
        [(None, GREEN), (0.25, YELLOW), (1, RED)], decimals=4, no_value="no data"))
    d = d.with_panel(stat_panel(
        "Tasks", "Task runs (tokentrail.task) finished in the range, all outcomes. A jump with flat traffic means "
        "an agent is being invoked in a loop by its caller: check the task names in 'Expensive requests'.",
        [promq(f"sum({q.delta_in(f'{q.TASK_COST}_count{q.matchers(v)}', q.RANGE)}) or vector(0)", instant=True)],
        CALLS, [(None, GREEN)], decimals=0))
    iterations = lambda part: q.delta_in(f"{q.TASK_ITERATIONS}_{part}{q.matchers(v)}", q.RANGE)
    d = d.with_panel(stat_panel(
        "Calls per task (average)", "LLM calls per task run, averaged over the runs in the range (the iteration "
        "count). Red above 10: agents are looping; see 'Calls per task p95' and the task traces.",
        [promq(f"sum({iterations('sum')}) / sum({iterations('count')})", instant=True)], CALLS,
        [(None, GREEN), (5, YELLOW), (10, RED)], decimals=2, no_value="no data"))
    d = d.with_panel(stat_panel(
        "Calls per task p95", "95th percentile of LLM calls per task run (from the iteration histogram). Red "
        "above 10: a few runs loop (an agent retrying its own output with the full context); set max_calls on "
        "the task and open the most expensive tasks.",
        [promq(q.quantile_cost(0.95, q.TASK_ITERATIONS, variables=v), instant=True)], CALLS,
        [(None, GREEN), (5, YELLOW), (10, RED)], decimals=1, no_value="no data"))
    d = d.with_panel(_calls_per_task_panel())
    d = d.with_row(db.Row("Cache"))
    d = d.with_panel(table_panel(
        "Cache-hit ratio by tenant", "Cache-read share of input tokens per tenant in the range; click a tenant "
        "for its expensive requests. Red below 50%: the same product at 61% instead of 97% cache hits pays many "
        "times more per request; look at what varies in that tenant's prompt prefix.",
        [promq(f"100 * {q.cache_hit_ratio(q.TENANT, variables=v)}", instant=True, table_format=True)], PERCENT,
        w=12, links=[owner_link(q.TENANT, "tenant")], steps=((None, RED), (50, YELLOW), (80, GREEN))))
    d = d.with_panel(stat_panel(
        "Cache-hit ratio: median tenant", "The median of the per-tenant cache-hit ratios (each tenant counts "
        "once, whatever its volume). Red below 50%: caching is broken for most tenants, usually a shared prompt "
        "prefix that now changes per request (a timestamp, a reordered tool list).",
        [promq(f"100 * quantile(0.5, {q.cache_hit_ratio(q.TENANT, variables=v)})", instant=True)], PERCENT,
        [(None, RED), (50, YELLOW), (80, GREEN)], w=6, decimals=1, no_value="no data"))
    d = d.with_panel(stat_panel(
        "Cache-hit ratio: p10 tenant", "The 10th percentile of per-tenant cache-hit ratios: the worst-cached "
        "tenants. Red below 50% while the median is high is the dispersion that hides behind an account-wide "
        "average: fix those tenants' prompts first.",
        [promq(f"100 * quantile(0.1, {q.cache_hit_ratio(q.TENANT, variables=v)})", instant=True)], PERCENT,
        [(None, RED), (50, YELLOW), (80, GREEN)], w=6, decimals=1, no_value="no data"))
    # Each tenant's own dispersion over time: its hourly cache-hit ratios, median and 10th percentile.
    hourly = f"({q.cache_hit_ratio(q.TENANT, '1h', v)}) >= 0"  # >= 0 drops hours without input (0/0)
    d = d.with_panel(table_panel(
        "Cache-hit ratio per tenant: median and p10 hour", "For each tenant, the median and the 10th percentile "
        "of its hourly cache-hit ratios in the range (tenant-hours with input only); click a tenant for its "
        "expensive requests. A p10 far below the median means some hours lose the cache (deploys changing the "
        "prompt prefix, traffic gaps longer than the cache TTL). Red below 50%.",
        [promq(f"100 * quantile_over_time(0.5, ({hourly})[$__range:1h])", ref="A", instant=True,
               table_format=True),
         promq(f"100 * quantile_over_time(0.1, ({hourly})[$__range:1h])", ref="B", instant=True,
               table_format=True)],
        PERCENT, w=24, links=[owner_link(q.TENANT, "tenant")], steps=((None, RED), (50, YELLOW), (80, GREEN))))
    d = d.with_row(db.Row("Budget"))
    budget_by = f"{q.TENANT},{q.TEAM},{q.BUDGET_WINDOW}"
    bv = {q.TENANT: "$tenant", q.TEAM: "$team"}
    d = d.with_panel(_burn_gauge(
        "Budget burn against budget",
        "Spend counted against each tenant/team budget in its current window (day or month), as a "
        "percentage of the budget. Yellow at 50%, orange at 80%, red at 100% (the breaker blocks "
        "further calls when hard limits are on): raise the budget or find the spender in "
        "'Spend over time'.",
        promq(f"100 * max by ({budget_by}) ({q.BUDGET_SPENT}{q.matchers(bv)})"
              f" / max by ({budget_by}) ({q.BUDGET_LIMIT}{q.matchers(bv)})", instant=True,
              legend=f"{{{{{q.TENANT}}}}}{{{{{q.TEAM}}}}} ({{{{{q.BUDGET_WINDOW}}}}})")))
    burn_by = f"{q.TENANT},{q.BUDGET_WINDOW}"
    d = d.with_panel(_burn_gauge(
        "Burn against plan revenue",
        "LLM spend of each tenant with a margin budget (limit: N% of plan) in its current window, as "
        "a percentage of what its plan brings in for that window (the monthly revenue, or a day's "
        "part of it). Yellow at 50%, orange at 80%: the tenant's AI gross margin is shrinking; red at "
        "100%: the tenant costs more than it pays. Compare plans with `tokentrail margin`.",
        promq(f"100 * max by ({burn_by}) ({q.PLAN_BURN}{q.matchers({q.TENANT: '$tenant'})})",
              instant=True, legend=f"{{{{{q.TENANT}}}}} ({{{{{q.BUDGET_WINDOW}}}}})")))
    return d


def _burn_gauge(title: str, description: str, target: prometheus.Dataquery) -> bargauge.Panel:
    """A full-width bar gauge of percent burned, yellow at 50%, orange at 80%, red at 100%."""
    return (bargauge.Panel().title(title).description(description)
            .datasource(PROMETHEUS).unit(PERCENT).min(0).max(100).span(24).height(8)
            .thresholds(thresholds((None, GREEN), (50, YELLOW), (80, ORANGE), (100, RED)))
            .orientation(cm.VizOrientation.HORIZONTAL)
            .with_target(target))


def _calls_per_task_panel() -> table.Panel:
    # Calls per task is a task-span attribute (the metric would need the task id as a label).
    sel = ", ".join(f"span.{a}" for a in (A.TOKENTRAIL_TASK_CALLS, A.TOKENTRAIL_TASK_NAME,
                                           A.TOKENTRAIL_TASK_COST_TOTAL, A.TOKENTRAIL_TASK_OUTCOME,
                                           A.TOKENTRAIL_TENANT, A.TOKENTRAIL_FEATURE))
    # :regex formats a multi-value selection as (a|b) for TraceQL's =~
    query = (f'{{ span.{A.TOKENTRAIL_TASK_CALLS} > 0 && span.{A.TOKENTRAIL_TENANT} =~ "${{tenant:regex}}" }}'
             f' | select({sel})')
    return (table.Panel().title("Task runs by iteration count")
            .description("Task runs with their number of LLM calls, from Tempo task spans, most calls first. "
                         "Red above 10 calls: an agent is looping (retrying its own output with the full context); "
                         "open the trace, then set max_calls on the task.")
            .datasource(TEMPO).with_target(traceql(query, limit=50)).unit(CALLS).span(12).height(8)
            .thresholds(thresholds((None, GREEN), (5, YELLOW), (10, RED)))
            .sort_by([cb.TableSortByFieldState().display_name(A.TOKENTRAIL_TASK_CALLS).desc(True)]))


# --- 3. Expensive requests --------------------------------------------------------------------------
def expensive() -> db.Dashboard:
    v = {q.TENANT: "$tenant", q.FEATURE: "$feature", q.ENVIRONMENT: "$environment"}
    d = _base("tokentrail: Expensive requests", UID_EXPENSIVE,
              "From a cost spike to the request that caused it: cost histogram with trace exemplars and the most "
              "expensive LLM calls and tasks with their owner.", ["cost", "traces"])
    for name, lbl in (("tenant", "Tenant"), ("feature", "Feature")):
        d = d.with_variable(db.TextBoxVariable(name).label(lbl + " (regex)").default_value(".*"))
    d = d.with_variable(env_var())
    d = d.with_variable(db.TextBoxVariable("min_cost").label("Min cost (USD)").default_value("0.05"))
    d = d.with_panel(
        heatmap.Panel().title("Cost per request (histogram)")
        .description("Calls per cost bucket over time; the dots are exemplars: click one to open that request's "
                     "trace in Tempo. Calls in the top buckets are the ones to explain first; red marks calls over $1.")
        .datasource(PROMETHEUS).span(24).height(9).calculate(False).unit(USD)
        .thresholds(thresholds((None, GREEN), (1, RED)))
        .with_target(promq(f"sum by (le) ({q.delta_in(f'{q.COST}_bucket{q.matchers(v)}', q.INTERVAL)})",
                           legend="{{le}}", heatmap_format=True, exemplar=True))
        .y_axis(heatmap.YAxisConfig().unit(USD)).show_legend().exemplars_color("red")
        .scale_distribution(cb.ScaleDistributionConfig().type(cm.ScaleDistribution.LINEAR)))
    d = d.with_panel(ts_panel(
        "Cost per request p99 (with exemplars)", "99th percentile USD per call, with exemplar dots linking to the "
        "traces. Red above $1: open the exemplar, read the owner and the input size on the span.",
        [promq(q.quantile_cost(0.99, window="$__rate_interval", variables=v), legend="p99", exemplar=True)],
        USD, w=12, steps=((None, GREEN), (1, RED))))
    d = d.with_panel(table_panel(
        "Calls per cost bucket", "Priced calls in the range by cost bucket upper bound (le, USD).",
        [promq(f"sum by (le) ({q.delta_in(f'{q.COST}_bucket{q.matchers(v)}', q.RANGE)})", instant=True,
               table_format=True)], CALLS, w=12))
    llm_sel = ", ".join(f"span.{a}" for a in (
        A.GEN_AI_USAGE_COST_AMOUNT, A.TOKENTRAIL_TENANT, A.TOKENTRAIL_FEATURE, A.TOKENTRAIL_TEAM,
        A.GEN_AI_REQUEST_MODEL, A.GEN_AI_RESPONSE_MODEL, A.GEN_AI_USAGE_INPUT_TOKENS,
        A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, A.TOKENTRAIL_TASK_NAME, A.TOKENTRAIL_RETRY_ATTEMPT,
        A.TOKENTRAIL_FALLBACK_FROM))
    owner_filter = (f'span.{A.TOKENTRAIL_TENANT} =~ "$tenant" && span.{A.TOKENTRAIL_FEATURE} =~ "$feature"')
    d = d.with_panel(
        table.Panel().title("Most expensive LLM calls")
        .description("LLM spans costing at least $min_cost in the range whose tenant and feature match the "
                     "filters, with their owner, sorted by cost (Tempo returns up to 50 matching traces: raise "
                     "$min_cost to keep only the top). "
                     "Click the trace id to open it. Red rows are over $1: check input tokens (long-context tier?), "
                     "retry attempt and fallback model.")
        .datasource(TEMPO).span(24).height(10).unit(USD)
        .with_target(traceql(f"{{ span.{A.GEN_AI_USAGE_COST_AMOUNT} >= $min_cost && {owner_filter} }}"
                             f" | select({llm_sel})", limit=50))
        .thresholds(thresholds((None, GREEN), (0.25, YELLOW), (1, RED)))
        .sort_by([cb.TableSortByFieldState().display_name(A.GEN_AI_USAGE_COST_AMOUNT).desc(True)]))
    # Spans with no tenant never match a tenant regex, so the unattributed ones get their own table.
    d = d.with_panel(
        table.Panel().title("Most expensive unattributed LLM calls")
        .description("LLM spans with no tenant costing at least $min_cost (scripts, CI jobs, staging without "
                     "owner tags), sorted by cost; never hidden by the tenant filter. Red rows are over $1: find "
                     "the service and code path in the trace and wrap it in tokentrail.attribute(...).")
        .datasource(TEMPO).span(24).height(8).unit(USD)
        .with_target(traceql(f"{{ span.{A.GEN_AI_USAGE_COST_AMOUNT} >= $min_cost && "
                             f"span.{A.TOKENTRAIL_ATTRIBUTED} = false }} | select({llm_sel})", limit=50))
        .thresholds(thresholds((None, GREEN), (0.25, YELLOW), (1, RED)))
        .sort_by([cb.TableSortByFieldState().display_name(A.GEN_AI_USAGE_COST_AMOUNT).desc(True)]))
    task_sel = ", ".join(f"span.{a}" for a in (
        A.TOKENTRAIL_TASK_COST_TOTAL, A.TOKENTRAIL_TASK_NAME, A.TOKENTRAIL_TASK_CALLS, A.TOKENTRAIL_TASK_OUTCOME,
        A.TOKENTRAIL_TASK_COST_RETRIES, A.TOKENTRAIL_TASK_COST_FALLBACKS, A.TOKENTRAIL_TENANT,
        A.TOKENTRAIL_FEATURE))
    d = d.with_panel(
        table.Panel().title("Most expensive tasks")
        .description("Task runs costing at least $min_cost, with iteration count, outcome and the part spent on "
                     "retries and fallbacks; sorted by cost. Red over $1: open the trace and read the call "
                     "sequence.")
        .datasource(TEMPO).span(24).height(10).unit(USD)
        .with_target(traceql(f"{{ span.{A.TOKENTRAIL_TASK_COST_TOTAL} >= $min_cost && {owner_filter} }}"
                             f" | select({task_sel})", limit=50))
        .thresholds(thresholds((None, GREEN), (0.25, YELLOW), (1, RED)))
        .sort_by([cb.TableSortByFieldState().display_name(A.TOKENTRAIL_TASK_COST_TOTAL).desc(True)]))
    return d


DASHBOARDS = {"overview": overview, "owner-drilldown": owner, "expensive-requests": expensive}


def render(builder: db.Dashboard) -> str:
    return json.dumps(builder.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def generate() -> dict[str, str]:
    """File name -> JSON text for every dashboard."""
    return {f"{name}.json": render(make()) for name, make in DASHBOARDS.items()}


def write(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in generate().items():
        path = directory / name
        path.write_text(text)
        out.append(path)
    return out


def stale(directory: Path = JSON_DIR) -> list[str]:
    return [name for name, text in generate().items()
            if not (directory / name).exists() or (directory / name).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is stale")
    parser.add_argument("--out", type=Path, default=JSON_DIR)
    args = parser.parse_args(argv)
    if args.check:
        names = stale(args.out)
        for name in names:
            print(f"stale: {args.out / name}")
        return 1 if names else 0
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
