"""``margin``: per tenant, revenue (from ``tokentrail.plans``) against LLM cost, and per plan the spread.

Revenue of a period is each calendar month's revenue times the share of that month the period
covers (a whole ``--month`` is the monthly figure exactly), rounded once to the nano-dollar. Cost
is net of re-pricing adjustments. A tenant with spend and no plan, and a plan's tenant with no
spend, are both listed; a cost that could not be priced is unknown, so is its margin (never $0).
"""

from __future__ import annotations

from datetime import datetime, timezone
from fractions import Fraction
from typing import Any, Iterable, Sequence

from tokentrail.ledger.queries.common import (
    NANO, NO_COST_KIND, STOPPED_ERROR_TYPE, LedgerBase, Period, QueryError, Where, label, month_period, no_cost_counts,
    percentile, selection,
)
from tokentrail.ledger import adjustments
from tokentrail.plans import Plans

NO_PLAN = "(no plan)"
OK = "ok"  # tokentrail.tasks' outcome of a task run that finished without an exception
_DAY_NS = 86400 * NANO


# --- the period and its revenue ----------------------------------------------------------------
def _month_start(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp()) * NANO


def _months(since_ns: int, until_ns: int) -> Iterable[tuple[int, int]]:
    """The calendar months (start, end) that [since, until) overlaps."""
    moment = datetime.fromtimestamp(since_ns // NANO, tz=timezone.utc)
    year, month = moment.year, moment.month
    while True:
        start = _month_start(year, month)
        if start >= until_ns:
            return
        year, month = year + month // 12, month % 12 + 1
        yield start, _month_start(year, month)


def month_share(period: Period) -> Fraction:
    """How many months' revenue the period earns: the covered share of each calendar month, summed."""
    if period.since_ns is None:
        raise QueryError("a margin needs a period with a start: --month, or --since")
    share = Fraction(0)
    for start, end in _months(period.since_ns, period.until_ns):
        overlap = min(end, period.until_ns) - max(start, period.since_ns)
        share += Fraction(overlap, end - start)
    return share


def prorated(monthly_nano: int | None, share: Fraction) -> int | None:
    """The period's revenue of a monthly amount, to the nearest nano-dollar."""
    return None if monthly_nano is None else round(monthly_nano * share)


# --- the query ---------------------------------------------------------------------------------
# Each query reads as little as it can: the tenant totals come from the report index alone; only the
# calls with no cost, the re-priced calls and the task calls are read from the table itself.
_TOTALS = (f"SELECT tenant, COUNT(*), COUNT(cost_nano), SUM(cost_nano), COUNT(DISTINCT start_ns / {_DAY_NS})"
           " FROM spans WHERE llm = 1 AND {cond} GROUP BY tenant")
_NO_COST = (f"SELECT tenant, {NO_COST_KIND}, COUNT(*) FROM spans WHERE llm = 1 AND cost_nano IS NULL"
            f" AND {adjustments.DELTA} = 0 AND {{cond}} GROUP BY 1, 2")
# per call its adjustments' sum (CROSS JOIN: from the few adjustments to their calls, never the other way);
# a call with no price that a re-price priced counts as priced
_ADJUSTED = ("SELECT tenant, task_id, SUM(delta), SUM(cost_nano IS NULL AND delta != 0) FROM ("
             "SELECT spans.tenant AS tenant, spans.task_id AS task_id, spans.cost_nano AS cost_nano,"
             " SUM(delta_nano) AS delta FROM adjustments CROSS JOIN spans ON spans.id = adjustments.span_row"
             " WHERE llm = 1 AND {cond} GROUP BY spans.id) GROUP BY 1, 2")
_TASKS = (f"SELECT tenant, task_id, SUM(CASE WHEN error_type = '{STOPPED_ERROR_TYPE}' THEN 0 ELSE 1 END),"
          " COUNT(cost_nano), SUM(cost_nano), GROUP_CONCAT(DISTINCT trace_id) FROM spans"
          " WHERE llm = 1 AND task_id IS NOT NULL AND {cond} GROUP BY 1, 2")
_CHUNK = 500  # trace ids per query (SQLite's host parameters are limited)


def margin(ledger: LedgerBase, period: Period, plans: Plans, where: Where = (), target: float = 0.7) -> dict:
    """Per tenant revenue, cost, margin and unit costs, below ``target`` first; per plan the spread."""
    share = month_share(period)
    cond, params = selection(period, where)
    run = lambda sql: ledger.conn.execute(sql.format(cond=cond), params)  # noqa: E731
    per: dict[str | None, dict[str, Any]] = {}
    for tenant, calls, priced, cost, days in run(_TOTALS):
        per[tenant] = {**_fresh(), "calls": calls, "priced": priced, "cost": cost or 0, "days": days}
    for tenant, kind, calls in run(_NO_COST):
        per[tenant]["no_cost"][kind] = calls
    tasks: dict[tuple[str | None, str], list] = {}  # (tenant, task id) -> [calls sent, priced calls, cost]
    traces: set[str] = set()  # a task span is in the trace of its calls
    for tenant, task_id, sent, priced, cost, trace_ids in run(_TASKS):
        tasks[(tenant, task_id)] = [sent, priced, cost or 0]
        traces.update(trace_ids.split(","))
    for tenant, task_id, delta, priced in run(_ADJUSTED):
        t = per[tenant]
        t["adjustment"] += delta
        t["cost"] += delta
        t["priced"] += priced
        if task_id is not None:
            tasks[(tenant, task_id)][1] += priced
            tasks[(tenant, task_id)][2] += delta
    outcomes = _outcomes(ledger, traces)
    for (tenant, task_id), (sent, priced, cost) in tasks.items():
        t = per[tenant]
        t["task_calls"].append(sent)
        t["ok_tasks"] += outcomes.get((tenant, task_id)) == OK
        if priced:
            t["task_cost"] += cost
            t["task_priced"] = True
    wanted = _tenant_filter(where)
    for tenant in plans.tenants:
        if wanted is None or tenant in wanted:
            per.setdefault(tenant, _fresh())
    rows = [_tenant_row(tenant, t, plans, share, target) for tenant, t in per.items()]
    rows.sort(key=_order)
    return {
        "ledger": ledger.path,
        "period": period.describe(),
        "months": float(share),
        "whole_months": share.denominator == 1,
        "plans_source": plans.source or None,
        "target_margin": target,
        "tenants": rows,
        "plans": _plan_rows(rows),
        "total": _total(rows),
    }


def _fresh() -> dict[str, Any]:
    return {"calls": 0, "priced": 0, "cost": 0, "adjustment": 0, "days": 0, "no_cost": {},
            "task_calls": [], "ok_tasks": 0, "task_cost": 0, "task_priced": False}


def _outcomes(ledger: LedgerBase, traces: set[str]) -> dict[tuple[str | None, str], str]:
    """(tenant, task id) -> the outcome of its latest task span, found in its calls' traces (the trace index)."""
    found: dict[tuple[str | None, str], tuple[int, str]] = {}
    ordered = sorted(traces)
    for i in range(0, len(ordered), _CHUNK):
        chunk = ordered[i:i + _CHUNK]
        sql = (f"SELECT tenant, task_id, task_outcome, COALESCE(end_ns, start_ns) FROM spans WHERE trace_id IN"
               f" ({', '.join('?' * len(chunk))}) AND task_outcome IS NOT NULL AND task_id IS NOT NULL")
        for tenant, task_id, outcome, end in ledger.conn.execute(sql, chunk):
            if (tenant, task_id) not in found or end >= found[(tenant, task_id)][0]:
                found[(tenant, task_id)] = (end, outcome)
    return {key: outcome for key, (_, outcome) in found.items()}


def _tenant_filter(where: Where) -> set[str | None] | None:
    """The tenants ``--where tenant=...`` keeps (None: no tenant filter)."""
    values = [value for key, value in where if key == "tenant"]
    return set(values) if values else None


def _tenant_row(tenant: str | None, t: dict[str, Any], plans: Plans, share: Fraction, target: float) -> dict:
    plan = plans.plan_of(tenant) if tenant is not None else None
    revenue = prorated(plans.monthly_revenue_nano(tenant), share) if tenant is not None else None
    cost = t["cost"] if t["priced"] or not t["calls"] else None  # no priced call: unknown, not $0
    margin_nano = None if revenue is None or cost is None else revenue - cost
    margin_pct = margin_nano / revenue if margin_nano is not None and revenue else None
    below = margin_nano is not None and (margin_pct < target if revenue else cost > 0)
    ok_tasks = t["ok_tasks"]
    task_calls = sorted(t["task_calls"])
    row = {
        "tenant": label("tenant", tenant),
        "plan": plan or NO_PLAN,
        "revenue_nano_usd": revenue,
        "cost_nano_usd": cost,
        "margin_nano_usd": margin_nano,
        "margin_pct": margin_pct,
        "below_target": below,
        "losing_money": margin_nano is not None and margin_nano < 0,
        "calls": t["calls"],
        "active_days": t["days"],
        "cost_per_active_day_nano_usd": cost // t["days"] if cost is not None and t["days"] else None,
        "tasks": len(task_calls),
        "ok_tasks": ok_tasks,
        # every task run's cost, failed and stopped runs too, over the runs that succeeded
        "cost_per_successful_task_nano_usd": t["task_cost"] // ok_tasks if ok_tasks and t["task_priced"] else None,
        "calls_per_task_p95": percentile(task_calls, 0.95),
        **no_cost_counts(t["no_cost"]),
    }
    if t["adjustment"]:
        row["adjustment_nano_usd"] = t["adjustment"]
    return row


def _order(row: dict) -> tuple:
    """Below target first (worst margin first), then margin unknown (costliest first), then the rest."""
    if row["margin_nano_usd"] is None:
        return (1, -(row["cost_nano_usd"] or 0), 0.0, row["tenant"])
    pct = row["margin_pct"]
    if pct is None:  # no revenue: a loss of any size is worst, no spend at all is last
        pct = float("-inf") if row["margin_nano_usd"] < 0 else float("inf")
    return (0 if row["below_target"] else 2, pct, row["margin_nano_usd"], row["tenant"])


def _known(values: Iterable[Any]) -> list:
    return sorted(v for v in values if v is not None)


def _plan_rows(tenants: Sequence[dict]) -> list[dict]:
    """Per plan: its tenants, revenue, cost, margin, and the spread of tenant cost and margin."""
    groups: dict[str, list[dict]] = {}
    for row in tenants:
        groups.setdefault(row["plan"], []).append(row)
    out = []
    for plan, rows in groups.items():
        costs = _known(r["cost_nano_usd"] for r in rows)
        margins = _known(r["margin_nano_usd"] for r in rows)
        pcts = _known(r["margin_pct"] for r in rows)
        summed = _total(rows)
        out.append({
            "plan": plan,
            "tenants": len(rows),
            "calls": summed["calls"],
            "revenue_nano_usd": summed["revenue_nano_usd"],
            "cost_nano_usd": summed["cost_nano_usd"],
            "margin_nano_usd": summed["margin_nano_usd"],
            "margin_pct": summed["margin_pct"],
            "losing_money": summed["losing_money"],
            # nearest rank over the plan's tenants (tenants with no spend count: they cost $0)
            "cost_median_nano_usd": percentile(costs, 0.5),
            "cost_p90_nano_usd": percentile(costs, 0.9),
            "margin_median_nano_usd": percentile(margins, 0.5),
            "margin_p10_nano_usd": percentile(margins, 0.1),
            "margin_pct_median": percentile(pcts, 0.5),
            "margin_pct_p10": percentile(pcts, 0.1),
            "unknown_cost_tenants": summed["unknown_cost_tenants"],
        })
    out.sort(key=lambda p: (p["plan"] == NO_PLAN, -(p["revenue_nano_usd"] or 0), p["plan"]))
    return out


def _total(rows: Sequence[dict]) -> dict:
    """Revenue and cost over rows: spend with no plan lowers the margin; unknown costs are counted apart."""
    revenues = [r["revenue_nano_usd"] for r in rows if r["revenue_nano_usd"] is not None]
    costs = [r["cost_nano_usd"] for r in rows if r["cost_nano_usd"] is not None]
    revenue = sum(revenues) if revenues else None
    cost = sum(costs) if costs else None
    margin_nano = None if revenue is None or cost is None else revenue - cost
    return {
        "tenants": len(rows),
        "calls": sum(r["calls"] for r in rows),
        "revenue_nano_usd": revenue,
        "cost_nano_usd": cost,
        "margin_nano_usd": margin_nano,
        "margin_pct": margin_nano / revenue if margin_nano is not None and revenue else None,
        "below_target": sum(r["below_target"] for r in rows),
        "losing_money": sum(r["losing_money"] for r in rows),
        "unknown_cost_tenants": sum(r["cost_nano_usd"] is None for r in rows),
    }
