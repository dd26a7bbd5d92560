"""``tokentrail report``: spend grouped by owner, provider, model or day."""

from __future__ import annotations

import argparse
import csv
import sys

from tokentrail.cli import _common as c
from tokentrail.ledger.queries.common import MISSING, UNATTRIBUTED


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="spend grouped by tenant, feature, team, user, task, provider, model or day",
        description="Spend from the ledger, grouped by one or more fields, with calls, tokens, cache-hit ratio,"
        " cost, share of the total and the change against the previous period of equal length."
        " Calls with no tenant are their own (unattributed) row.",
    )
    c.add_by_option(p, "tenant")
    c.add_period_options(p)
    c.add_format_option(p, ("table", "csv", "json"))
    c.add_ledger_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    by = c.by_fields(args, "tenant,feature")
    period, where = c.period_and_where(args)
    with c.open_ledger(args) as ledger:
        data = c.query(ledger.report, by, period, where)
    return c.emit(args.format, data, render, write_csv)


_CSV_COLUMNS = ("calls", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens",
                "cache_hit_ratio", "cost_usd", "cost_nano_usd", "share", "previous_cost_nano_usd", "change",
                "unpriced_calls", "no_usage_calls", "blocked_calls")


def write_csv(data: dict) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([*data["group_by"], *_CSV_COLUMNS])
    for row in data["rows"]:
        writer.writerow([*(row[f] for f in data["group_by"]), *("" if row.get(k) is None else row.get(k) for k in _CSV_COLUMNS)])


def render(data: dict) -> str:
    by = data["group_by"]
    compare = data["compared_with"] is not None
    adjusted = "adjustment_nano_usd" in data["total"]  # re-priced: original, adjustments and net
    headers = [*by, "calls", "input", "cached", "output", "cache hit", "cost", "share"] + (["vs prev"] if compare else [])
    headers += ["adjustment", "net"] if adjusted else []
    right = [False] * len(by) + [True] * (len(headers) - len(by))

    def cells(row: dict, names: list[str]) -> list[str]:
        out = [*names, c.count(row["calls"]), c.count(row["input_tokens"]), c.count(row["cache_read_tokens"]),
               c.count(row["output_tokens"]), c.pct(row["cache_hit_ratio"]), c.cost(row["cost_nano_usd"], row),
               c.pct(row.get("share", 1.0), 1)]
        if compare:
            out.append(c.change(row.get("change"), row.get("previous_cost_nano_usd")))
        if adjusted:
            out += [c.usd(row["adjustment_nano_usd"]), c.usd(row["net_cost_nano_usd"])]
        return out

    rows = [cells(r, [r[f] for f in by]) for r in data["rows"]]
    total = data["total"]
    rows.append(cells(dict(total, share=1.0 if total["calls"] else None), ["TOTAL"] + [""] * (len(by) - 1)))
    period = data["period"]
    head = f"Spend {period['since'] or 'all time'} .. {period['until']}"
    if data["where"]:
        head += "  where " + ", ".join(f"{k}={v if v is not None else MISSING.get(k, UNATTRIBUTED)}" for k, v in data["where"].items())
    lines = [head, "", c.table(headers, rows, right), ""]
    lines.append(
        f"unattributed (no tenant): {c.usd(total['unattributed_cost_nano_usd'])}"
        f" = {c.pct(total['unattributed_share'], 1)} of spend"
    )
    if total.get("unverified_calls"):
        n = total["unverified_calls"]
        lines.append(f"of which unverified: {c.cost(total['unverified_cost_nano_usd'])} ({n:,} call{'s' if n != 1 else ''})"
                     " that tokentrail could not vouch were counted once (tokentrail.unverified, docs/pipeline.md)")
    no_cost = total["calls"] - total["priced_calls"]
    if no_cost:
        parts = [(total["unpriced_calls"], "on models not on the rate card (unpriced, see `tokentrail price`)"),
                 (total["no_usage_calls"], "failed or reported no usage (no_usage)"),
                 (total["blocked_calls"], "stopped by a circuit breaker before sending (blocked, never billed)")]
        lines.append(f"{no_cost:,} call{'s' if no_cost != 1 else ''} without a cost (counted, not $0): "
                     + "; ".join(f"{n:,} {why}" for n, why in parts if n))
    if compare:
        prev = data["compared_with"]
        lines.append(f"vs prev: change against {prev['since']} .. {prev['until']}")
    if adjusted:
        lines.append(f"re-priced (tokentrail reprice --list): original {c.usd(total['cost_nano_usd'])}, adjustments"
                     f" {c.usd(total['adjustment_nano_usd'])}, net {c.usd(total['net_cost_nano_usd'])}")
    for run in data.get("reconciliations", [])[:5]:  # newest first
        lines.append(f"invoice-matched ({run['provider']}, {run['since']} .. {run['until']}): provider"
                     f" {c.usd(run['provider_cost_nano'])}, ledger {c.usd(run['ledger_cost_nano'])},"
                     f" capture {c.pct(run['capture_rate'], 1)}")
    return "\n".join(lines)
