"""``tokentrail reconcile openai|anthropic``: the ledger against the provider's bill, per day x model."""

from __future__ import annotations

import argparse
import os
import sys
import time

from tokentrail.cli._common import (
    CliError, add_format_option, add_ledger_option, count, open_ledger, pct, print_json, query, table, usd,
)
from tokentrail.ledger import default_path
from tokentrail.ledger.queries import parse_time
from tokentrail.ledger.schema import connect
from tokentrail.reconcile import engine, store
from tokentrail.reconcile.runner import BASE_URLS, KEY_ENV, PROVIDERS, SourceError, run, utc_midnight

#: Exit status when the capture rate is under ``--fail-under`` (2 is a usage or source error).
UNDER = 1
_DAY_NS = 86400 * 10**9


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reconcile",
        help="compare the ledger with the provider's usage and cost (admin API): capture rate and why they differ",
        description="Compare the ledger with the provider's own usage and cost reports, per UTC day and model: "
        "both sides' tokens and cost, the capture rate (ledger / provider) and the residual explained. The admin "
        "key comes from OPENAI_ADMIN_KEY / ANTHROPIC_ADMIN_KEY, the API base from OPENAI_BASE_URL / "
        "ANTHROPIC_BASE_URL or --base-url. Each run over whole past days is stored in the ledger.",
    )
    p.add_argument("provider", choices=sorted(PROVIDERS))
    add_ledger_option(p)
    p.add_argument("--since", metavar="WHEN", default="30d", help="first UTC day: 30d ago (default) or a date")
    p.add_argument("--until", metavar="WHEN",
                   help="end (exclusive, a UTC day; default: today's start, as today is not billed in full yet)")
    p.add_argument("--by", metavar="FIELDS", default="day,model",
                   help=f"grain, from {', '.join(engine.GRAIN)} (default: day,model)")
    p.add_argument("--base-url", metavar="URL", help="the provider's API base (a proxy, a test's fake)")
    p.add_argument("--fail-under", metavar="RATE", type=float,
                   help="exit 1 when the capture rate is under RATE (e.g. 0.98), for an alert in cron")
    p.add_argument("--no-store", action="store_true", help="do not store this run in the ledger")
    add_format_option(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    grain = [f.strip().lower() for f in args.by.split(",") if f.strip()]
    if bad := [f for f in grain if f not in engine.GRAIN]:
        raise CliError(f"unknown field {bad[0]!r} in --by: choose from {', '.join(engine.GRAIN)}")
    key = os.environ.get(KEY_ENV[args.provider], "").strip()
    if not key:
        raise CliError(f"{KEY_ENV[args.provider]} is not set: the {args.provider} admin API needs an admin key")
    env, default_base = BASE_URLS[args.provider]
    base_url = args.base_url or os.environ.get(env) or default_base
    now_ns = time.time_ns()
    today = utc_midnight(now_ns)
    since = utc_midnight(query(parse_time, args.since, now_ns))
    until = utc_midnight(query(parse_time, args.until, now_ns) + _DAY_NS - 1) if args.until else today
    if since >= until:
        raise CliError(f"bad period: --since {args.since} is not before --until {args.until or 'today (UTC)'}")
    partial = until > today
    open_ledger(args).close()  # refuses a missing file or one that is not a ledger; migrates an older one
    conn = connect(args.ledger or default_path())
    try:
        try:
            result = run(conn, args.provider, base_url, key, since, until, grain)
        except SourceError as exc:
            raise CliError(str(exc)) from None
        if partial:
            print(f"tokentrail: note: today ({today.date()} UTC) is not over and the provider's figures for it are "
                  "still growing: shown, not stored", file=sys.stderr)
        elif not args.no_store:
            result["id"] = store.save(conn, result)
    finally:
        conn.close()
    if args.format == "json":
        print_json(result)
    else:
        print(render(result))
    rate = result["total"]["capture_rate"]
    if args.fail_under is not None and (rate is None or rate < args.fail_under):
        print(f"tokentrail: capture rate {pct(rate, 1)} is under --fail-under {args.fail_under:g}", file=sys.stderr)
        return UNDER
    return 0


def render(result: dict) -> str:
    grain = result["grain"]
    headers = [g.upper() for g in grain] + ["PROVIDER TOKENS", "LEDGER TOKENS", "PROVIDER COST", "LEDGER COST",
                                            "CAPTURE", "RESIDUAL", "EXPLAINED (largest first)"]
    rows = [[_value(c.get(g)) for g in grain] + _numbers(c) for c in result["cells"]]
    total = result["total"]
    rows.append(["TOTAL"] + [""] * (len(grain) - 1) + _numbers(total))
    out = [f"{result['provider']} bill vs ledger, {result['since']} to {result['until']} (UTC days, end exclusive)"
           + (f", rate card {result['rate_card_version']}" if result.get("rate_card_version") else ""), "",
           table(headers, rows, [False] * len(grain) + [True] * 6 + [False])]
    if total["explained"]:
        out += ["", "Residual explained:"]
        out += [f"  {usd(c['nano']):>16}  {c['category']}: {c['why']}" for c in total["explained"]]
    for s in result["suggestions"]:
        out += ["", f"Suggested: {s['model']} is billed {s['discount'] * 100:.2f}% under the rate card in every "
                f"day; add to the rate card (and `tokentrail reprice` the period):", *("  " + line for line in s["rate_card"].splitlines())]
    return "\n".join(out)


def _numbers(c: dict) -> list[str]:
    explained = ", ".join(f"{x['category']} {usd(x['nano'])}" + (f" ({x['calls']:,} call{'s' if x['calls'] != 1 else ''})" if x.get("calls") else "")
                          for x in c.get("explained", []))
    return [count(sum(c["provider"]["tokens"].values())), count(sum(c["ledger"]["tokens"].values())),
            usd(c["provider"]["cost_nano"]), usd(c["ledger"]["cost_nano"]), pct(c["capture_rate"], 1),
            usd(c["residual_nano"]), explained]


def _value(v: object) -> str:
    return "(none)" if v in (None, "") else str(v)
