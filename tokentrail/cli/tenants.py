"""``tokentrail tenants``: which customers cost the most per request, and their cache-hit dispersion."""

from __future__ import annotations

import argparse

from tokentrail.cli import _common as c


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tenants",
        help="per-tenant cache-hit ratio (median, p10) and cost per request, worst first",
        description="Per tenant: calls, cache-hit ratio per request (median and 10th percentile), cost per"
        " request and per active day, total cost. Sorted by cost per request, most expensive first.",
    )
    c.add_period_options(p)
    c.add_format_option(p)
    c.add_ledger_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    period, where = c.period_and_where(args)
    with c.open_ledger(args) as ledger:
        rows = c.query(ledger.tenants, period, where)
    if args.format == "json":
        c.print_json({"ledger": ledger.path, "period": period.describe(), "tenants": rows})
    else:
        adjusted = any("net_cost_nano_usd" in r for r in rows)  # re-priced: original, adjustments and net
        cells = [
            [r["tenant"], c.count(r["calls"]), c.pct(r["cache_hit_median"]), c.pct(r["cache_hit_p10"]),
             c.usd(r["cost_per_request_nano_usd"]), c.usd(r["cost_per_active_day_nano_usd"]), c.cost(r["cost_nano_usd"], r)]
            + ([c.usd(r["adjustment_nano_usd"]), c.cost(r["net_cost_nano_usd"], r)] if adjusted else [])
            for r in rows
        ]
        headers = ["tenant", "calls", "cache hit median", "cache hit p10", "cost/request", "cost/active day", "cost"]
        headers += ["adjustment", "net"] if adjusted else []
        print(c.table(headers, cells, [False] + [True] * (len(headers) - 1)))
    return 0
