"""``tokentrail margin``: which customer burns the margin: revenue per tenant and plan against LLM cost."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from decimal import Decimal
from typing import Any

from tokentrail import plans as plans_mod
from tokentrail.cli import _common as c
from tokentrail.ledger.queries import Period, parse_where
from tokentrail.ledger.queries import margin as q

DEFAULT_DAYS = 30  # no --month and no --since: the last 30 days
#: with no --plans and no $TOKENTRAIL_PLANS, the plans file beside the ledger (``tokentrail demo`` writes one)
PLANS_SUFFIX = ".plans.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "margin",
        help="per tenant and plan: revenue, LLM cost, gross margin, cost per successful task",
        description="Per tenant: revenue (from the plans file), LLM cost net of re-pricing, gross margin, cost"
        " per successful task and per active day, calls per task (p95); tenants below the target margin"
        " first; then per plan the spread of tenant cost and margin (median, p90). Revenue of a period that"
        " is not whole calendar months is each month's revenue times the share of it covered.",
    )
    p.add_argument("--month", metavar="YYYY-MM", help="a calendar month (UTC), e.g. 2026-11: monthly revenue as is")
    c.add_period_options(p)
    p.add_argument("--plans", metavar="FILE",
                   help=f"plans and revenue, YAML or a billing CSV (default: ${plans_mod.ENV_PLANS}, else the"
                   f" ledger's name with {PLANS_SUFFIX} beside it, as the demo writes)")
    p.add_argument("--target-margin", metavar="FRACTION", default="0.7",
                   help="gross margin below which a tenant is listed first: 0.7 or 70%% (default: 0.7)")
    c.add_format_option(p, ("table", "json", "csv"))
    c.add_ledger_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = _target(args.target_margin)
    period, where = _period(args), c.query(parse_where, args.where)
    plans = _plans(args)
    with c.open_ledger(args) as ledger:
        data = c.query(q.margin, ledger, period, plans, where, target)
    return c.emit(args.format, _with_usd(data) if args.format == "json" else data, render, write_csv)


def _target(text: str) -> float:
    value = text.strip()
    try:
        target = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        target = float("nan")
    if not -10 <= target < 1:  # also refuses nan
        raise c.CliError(f"bad --target-margin {text!r}: a fraction below 1, e.g. 0.7 or 70%")
    return target


def _period(args: argparse.Namespace) -> Period:
    if args.month:
        if args.since or args.until:
            raise c.CliError("give --month or --since/--until, not both")
        return c.query(q.month_period, args.month)
    period = c.query(Period.parse, args.since, args.until)
    return default_period(period.until_ns) if period.since_ns is None else period


def default_period(until_ns: int | None = None) -> Period:
    """The ``DEFAULT_DAYS`` days before ``until_ns`` (default: now): a margin needs a start."""
    until_ns = Period.parse(None, None).until_ns if until_ns is None else until_ns
    return Period(max(0, until_ns - DEFAULT_DAYS * 86400 * c.NANO), until_ns)


def plans_beside(ledger: str) -> str:
    """The plans file that goes with a ledger: ``tokentrail.db`` -> ``tokentrail.plans.yaml`` (the demo writes one)."""
    return os.path.splitext(ledger)[0] + PLANS_SUFFIX


def _plans(args: argparse.Namespace) -> plans_mod.Plans:
    """--plans, else $TOKENTRAIL_PLANS, else the plans file beside the ledger, else a one-line error."""
    path = args.plans or os.environ.get(plans_mod.ENV_PLANS) or None
    if path is None:
        beside = plans_beside(args.ledger or c.default_path())
        path = beside if os.path.exists(beside) else None
    if path is None:
        raise c.CliError(f"no plans: give --plans FILE or set {plans_mod.ENV_PLANS} (YAML or a billing CSV,"
                         " see docs/margin.md)")
    try:
        return plans_mod.load(path)
    except plans_mod.PlansError as exc:
        raise c.CliError(str(exc)) from None


# --- output ------------------------------------------------------------------------------------
def _usd_text(nano: int | None) -> str | None:
    return None if nano is None else str(Decimal(nano) / c.NANO)


def _with_usd(value: Any) -> Any:
    """Every ``*_nano_usd`` figure also as an exact decimal string of USD (``*_usd``)."""
    if isinstance(value, list):
        return [_with_usd(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, v in value.items():
        out[key] = _with_usd(v)
        if key.endswith("_nano_usd"):
            out[key[: -len("_nano_usd")] + "_usd"] = _usd_text(v)
    return out


_CSV_MONEY = ("revenue", "cost", "margin", "cost_per_active_day", "cost_per_successful_task")
_CSV_OTHER = ("margin_pct", "calls", "active_days", "tasks", "ok_tasks", "calls_per_task_p95", "below_target",
              "losing_money", "unpriced_calls", "no_usage_calls", "blocked_calls")


def write_csv(data: dict) -> None:
    """One row per tenant (the per-plan spread is in the table and the JSON)."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["tenant", "plan", *(f"{m}_usd" for m in _CSV_MONEY), *_CSV_OTHER])
    for row in data["tenants"]:
        money = [_usd_text(row[f"{m}_nano_usd"]) for m in _CSV_MONEY]
        writer.writerow([row["tenant"], row["plan"], *("" if v is None else v for v in money),
                         *(_cell(row[k]) for k in _CSV_OTHER)])


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else value


def _signed(nano: int | None) -> str:
    if nano is None:
        return "-"
    return "-" + c.usd(-nano) if nano < 0 else c.usd(nano)


def _status(row: dict) -> str:
    notes = []
    if row["losing_money"]:
        notes.append("losing money")
    elif row["below_target"]:
        notes.append("below target")
    if row["plan"] == q.NO_PLAN and row["calls"]:
        notes.append("spend with no plan")
    if row["cost_nano_usd"] is not None and row["unpriced_calls"]:
        notes.append(f"+{row['unpriced_calls']:,} unpriced calls")
    return ", ".join(notes)


def render(data: dict) -> str:
    target = data["target_margin"]
    period = data["period"]
    months = data["months"]
    revenue_rule = ("whole months: monthly revenue as billed" if data["whole_months"]
                    else f"{months:.3f} months: monthly revenue prorated by the share of each month covered")
    lines = [f"Margin {period['since']} .. {period['until']} ({revenue_rule})",
             f"plans {data['plans_source']}; target margin {c.pct(target)}", ""]
    cells = [
        [r["tenant"], r["plan"], c.usd(r["revenue_nano_usd"]), c.cost(r["cost_nano_usd"], r),
         _signed(r["margin_nano_usd"]), c.pct(r["margin_pct"], 1), c.count(r["calls"]), c.count(r["active_days"]),
         c.usd(r["cost_per_active_day_nano_usd"]), f"{r['ok_tasks']}/{r['tasks']}",
         c.usd(r["cost_per_successful_task_nano_usd"]), c.count(r["calls_per_task_p95"]), _status(r)]
        for r in data["tenants"]
    ]
    t = data["total"]
    cells.append(["TOTAL", "", c.usd(t["revenue_nano_usd"]), c.usd(t["cost_nano_usd"]), _signed(t["margin_nano_usd"]),
                  c.pct(t["margin_pct"], 1), c.count(t["calls"]), "", "", "", "", "", ""])
    lines.append(c.table(["tenant", "plan", "revenue", "LLM cost", "margin", "margin %", "calls", "active days",
                          "cost/active day", "ok/tasks", "cost/ok task", "calls/task p95", ""],
                         cells, [False, False] + [True] * 10 + [False]))
    lines += ["", "Per plan (nearest rank over the plan's tenants; margin p10: 90% of them do better):"]
    plan_cells = [
        [p["plan"], c.count(p["tenants"]), c.usd(p["revenue_nano_usd"]), c.usd(p["cost_nano_usd"]),
         _signed(p["margin_nano_usd"]), c.pct(p["margin_pct"], 1), c.usd(p["cost_median_nano_usd"]),
         c.usd(p["cost_p90_nano_usd"]), c.pct(p["margin_pct_median"], 1), c.pct(p["margin_pct_p10"], 1)]
        for p in data["plans"]
    ]
    lines.append(c.table(["plan", "tenants", "revenue", "LLM cost", "margin", "margin %", "cost median", "cost p90",
                          "margin median", "margin p10"], plan_cells, [False] + [True] * 9))
    losing = ", ".join(f"{r['tenant']} ({r['plan']}: {c.usd(r['cost_nano_usd'])} of LLM cost on"
                       f" {c.usd(r['revenue_nano_usd'])} of revenue)" for r in data["tenants"] if r["losing_money"])
    lines += ["", f"{t['below_target']} of {t['tenants']} tenants below the {c.pct(target)} target margin;"
              f" {t['losing_money']} losing money" + (f": {losing}." if losing else ".")]
    if t["unknown_cost_tenants"]:
        lines.append(f"{t['unknown_cost_tenants']} tenant(s) with no cost (calls not priced):"
                     " margin unknown, not 100%.")
    return "\n".join(lines)
