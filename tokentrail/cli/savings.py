"""``tokentrail savings``: ranked opportunities in the recorded traffic, each with its dollars and rows."""

from __future__ import annotations

import argparse
import csv
import sys

from tokentrail.cli import _common as c
from tokentrail.ledger import default_path
from tokentrail.ledger.queries.savings import CONFIG_SUFFIX, ENV_CONFIG, KINDS, load_config, savings

DEFAULT_SINCE = "14d"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "savings",
        help="ranked savings opportunities with dollars: waste, caching, batch, output caps, model tiering",
        description="Concrete opportunities in the period's traffic, largest first, each with its dollars and the"
        " ledger rows it stands on: waste (failed task runs, billed errors, retried attempts), caching (tenants far"
        " below their peers' cache hits, prompt growth against the previous period), batch (features and tasks the"
        f" config marks batch_eligible), output caps and model tiering (a what-if, not a quality claim). The"
        f" config is a YAML file (--config or ${ENV_CONFIG}): batch_eligible: [nightly-summaries]. The kinds are"
        " alternatives: they overlap and are not summed. The period: the last 14 days unless --since says"
        " otherwise (and the period of equal length before it, for prompt growth). Definitions: docs/savings.md.",
    )
    c.add_period_options(p)
    p.set_defaults(since=DEFAULT_SINCE)  # and the 14 days before it, for prompt growth
    p.add_argument("-n", "--limit", type=int, help="show only the N largest (default: every one)")
    p.add_argument("--kind", metavar="KINDS", help=f"comma-separated kinds to show, of: {', '.join(KINDS)}")
    p.add_argument("--config", metavar="YAML", help=f"the savings config (default: ${ENV_CONFIG}, else the"
                   f" ledger's {CONFIG_SUFFIX} beside it: tokentrail.db -> tokentrail{CONFIG_SUFFIX})")
    c.add_format_option(p, ("table", "csv", "json"))
    c.add_ledger_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise c.CliError("--limit must be 1 or more")
    kinds = [k.strip().lower() for k in (args.kind or "").split(",") if k.strip()]
    if unknown := [k for k in kinds if k not in KINDS]:
        raise c.CliError(f"unknown kind {unknown[0]!r} in --kind: choose from {', '.join(KINDS)}")
    period, where = c.period_and_where(args)
    config = c.query(load_config, args.config, args.ledger or default_path())
    with c.open_ledger(args) as ledger:
        data = c.query(savings, ledger, period, config, where)
    if kinds:
        data["opportunities"] = [o for o in data["opportunities"] if o["kind"] in kinds]
    if args.limit is not None:
        data["found"] = len(data["opportunities"])
        data["opportunities"] = data["opportunities"][: args.limit]
    return c.emit(args.format, data, render, write_csv)


_CSV_COLUMNS = ("rank", "kind", "what", "owner", "calls", "saving_usd", "saving_nano_usd", "spend_nano_usd", "detail")


def write_csv(data: dict) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for o in data["opportunities"]:
        row = {**o, "owner": " ".join(o["where"]), "saving_usd": c.usd(o["saving_nano_usd"]).lstrip("$")}
        writer.writerow([row[k] for k in _CSV_COLUMNS])


def _period(data: dict) -> str:
    p = data["period"]
    return f"{(p['since'] or 'the start')[:10]} to {p['until'][:10]}"


def render(data: dict) -> str:
    head = f"Savings opportunities, {_period(data)} (rate card {data['rate_card_version']})"
    rows = [[str(o["rank"]), o["kind"], o["what"], " ".join(o["where"]), c.count(o["calls"]),
             c.usd(o["saving_nano_usd"]), o["detail"]] for o in data["opportunities"]]
    out = [head, ""]
    out.append(c.table(["#", "KIND", "WHAT", "OWNER", "CALLS", "SAVING", "HOW"], rows,
                       [True, False, False, False, True, True, False]) if rows else "no opportunity found")
    why = c.no_cost_why(data)
    more = data.get("found", len(data["opportunities"])) - len(data["opportunities"])
    notes = [f"{c.count(data['calls'])} calls read" + (f"; {why} left out (no cost, never $0)" if why else "")
             + (f"; {more:,} smaller opportunities not shown (--limit)" if more else "")]
    if not data["config"]:
        notes.append(f"no batch_eligible features or tasks: name them in a YAML file (--config, ${ENV_CONFIG}"
                     f" or NAME{CONFIG_SUFFIX} beside the ledger NAME.db): batch_eligible: [nightly-summaries]")
    notes.append("The kinds are alternatives (they overlap): not a sum. Each figure's rows: --format json.")
    return "\n".join(out + [""] + notes)

