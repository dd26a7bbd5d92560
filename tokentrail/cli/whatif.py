"""``tokentrail whatif``: what the recorded traffic would have cost on another model, tier or provider."""

from __future__ import annotations

import argparse
import csv
import sys

from tokentrail.cli import _common as c
from tokentrail.ledger.queries.whatif import Target, whatif


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "whatif",
        help="re-price the recorded tokens on another model, tier or provider, per feature, tenant, task...",
        description="Price the real tokens of each group again on another model (--model), service tier"
        " (--tier batch) or provider (--provider), with the price in force at each call's time and its input,"
        " cache and output mix as recorded, against what the ledger says they cost. Models whose tokenizers"
        " differ are flagged approximate (the same text is another number of tokens). Calls with no cost"
        " (unpriced, no usage, stopped by a breaker) are counted, never compared as $0.",
    )
    c.add_by_option(p, "feature")
    p.add_argument("--model", help="the model to price with, e.g. gpt-4.1-mini (default: each call's own)")
    p.add_argument("--tier", help="the service tier to price at: standard, batch, flex, priority"
                   " (default: each call's)")
    p.add_argument("--provider", help="the provider to price at, e.g. openai, anthropic, azure (default: each call's)")
    c.add_period_options(p)
    c.add_format_option(p, ("table", "csv", "json"))
    c.add_ledger_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    by = c.by_fields(args, "feature")
    period, where = c.period_and_where(args)
    target = Target(args.model, args.tier.lower() if args.tier else None, args.provider)
    with c.open_ledger(args) as ledger:
        data = c.query(whatif, ledger, by, period, target, where)
    return c.emit(args.format, data, render, write_csv)


_CSV_COLUMNS = ("calls", "compared_calls", "current_nano_usd", "whatif_nano_usd", "change_nano_usd", "change",
                "approximate", "approximate_calls", "unpriced_calls", "no_usage_calls", "blocked_calls",
                "target_unpriced_calls", "whatif_of_unpriced_nano_usd")


def write_csv(data: dict) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([*data["by"], *_CSV_COLUMNS])
    for row in [*data["rows"], {**{f: "TOTAL" for f in data["by"]}, **data["total"]}]:
        writer.writerow([*(row[f] for f in data["by"]), *("" if row[k] is None else row[k] for k in _CSV_COLUMNS)])


def _target(data: dict) -> str:
    t = data["target"]
    parts = [t["model"] or "each call's model", f"{t['tier']} tier" if t["tier"] else None,
             f"provider {t['provider']}" if t["provider"] else None]
    return ", ".join(p for p in parts if p)


def _note(row: dict) -> str:
    notes = []
    if row["approximate_calls"]:
        notes.append(f"approximate: other tokenizer ({row['approximate_calls']:,} calls)")
    if row["target_unpriced_calls"]:
        notes.append(f"{row['target_unpriced_calls']:,} not priced on the target")
    why = c.no_cost_why(row)
    if why:
        notes.append(f"no cost: {why}")
    if row["whatif_of_unpriced_nano_usd"] is not None:
        notes.append(f"the unpriced ones: {c.usd(row['whatif_of_unpriced_nano_usd'])} on the target")
    return "; ".join(notes) or "-"


def signed_usd(nano: int) -> str:
    return ("-" if nano < 0 else "+" if nano > 0 else "") + c.usd(abs(nano))


def _change(row: dict) -> str:
    if row["change_nano_usd"] is None:
        return "-"
    pct = f" ({c.change(row['change'], None)})" if row["change"] is not None else ""
    return signed_usd(row["change_nano_usd"]) + pct


def render(data: dict) -> str:
    by = data["by"]
    rows = [[*(str(r[f]) for f in by), c.count(r["calls"]), c.cost(r["current_nano_usd"], r),
             c.usd(r["whatif_nano_usd"]) if r["whatif_nano_usd"] is not None else "-", _change(r), _note(r)]
            for r in data["rows"]]
    t = data["total"]
    rows.append(["TOTAL", *[""] * (len(by) - 1), c.count(t["calls"]), c.cost(t["current_nano_usd"], t),
                 c.usd(t["whatif_nano_usd"]) if t["whatif_nano_usd"] is not None else "-", _change(t), _note(t)])
    head = (f"What if on {_target(data)}: each call priced at its own time, its token mix as recorded"
            f" (rate card {data['rate_card_version']})")
    if not data["rows"]:
        return head + "\n\nno calls in this period"
    return head + "\n\n" + c.table([*(f.upper() for f in by), "CALLS", "NOW", "WHAT IF", "CHANGE", "NOTE"], rows,
                                   [False] * len(by) + [True] * 4 + [False])
