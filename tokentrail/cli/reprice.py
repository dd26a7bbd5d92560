"""``tokentrail reprice``: price a period again with another rate card, as adjustment entries (never a rewrite)."""

from __future__ import annotations

import argparse
import os

from tokentrail.cli._common import (
    CliError, add_format_option, add_ledger_option, count, open_ledger, print_json, query, table, usd,
)
from tokentrail.ledger import LedgerError, adjustments, default_path
from tokentrail.ledger.queries import Period, check_fields, parse_where
from tokentrail.ledger.schema import connect


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reprice",
        help="re-price history with another rate card: adjustment entries beside the original rows (reversible)",
        description="Price every call of a period again with RATE_CARD (a TOKENTRAIL_RATE_CARD overlay: a "
        "negotiated discount learned late, a corrected price, a reconciliation's suggestion) and show per owner "
        "what changes. Without --dry-run the changes are written as one batch of adjustment entries stamped with "
        "the new rate-card version and the reason; the original rows are never changed, and --revert BATCH undoes "
        "a batch with the opposite entries.",
    )
    add_ledger_option(p)
    p.add_argument("--since", metavar="WHEN", help="start of the period: 7d, 2w ago, or a date (2026-11-01)")
    p.add_argument("--until", metavar="WHEN", help="end of the period (default: now)")
    p.add_argument("--where", metavar="FIELD=VALUE", action="append", default=[], help="only matching calls")
    p.add_argument("--rate-card", metavar="YAML", help="the rate card to price with (overlay format)")
    p.add_argument("--reason", metavar="TEXT", help="why (stored with each entry; default: the rate card's file name)")
    p.add_argument("--by", metavar="FIELDS", default="tenant", help="owner fields of the summary (default: tenant)")
    p.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    p.add_argument("--revert", metavar="BATCH", help="undo a batch of adjustments (with the opposite entries)")
    p.add_argument("--list", action="store_true", help="list the adjustment batches")
    add_format_option(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    open_ledger(args).close()  # refuses a missing file or one that is not a ledger; migrates an older one
    conn = connect(args.ledger or default_path())
    try:
        if args.list:
            return _show_batches(args, adjustments.batches(conn))
        if args.revert:
            batch, entries = query(adjustments.revert, conn, args.revert)
            print(f"reverted {args.revert}: {entries:,} opposite entries in batch {batch}")
            return 0
        return _reprice(args, conn)
    finally:
        conn.close()


def _reprice(args: argparse.Namespace, conn) -> int:
    if not args.rate_card:
        raise CliError("--rate-card is required (or --revert BATCH, or --list)")
    if not os.path.isfile(args.rate_card):
        raise CliError(f"no rate card at {args.rate_card}")
    by = query(check_fields, args.by.split(","))
    period = query(Period.parse, args.since, args.until)
    where = query(parse_where, args.where)
    try:
        with adjustments.rate_card(args.rate_card) as version:
            changes = adjustments.plan(conn, period, where, by)
    except LedgerError as exc:
        raise CliError(str(exc)) from None
    groups = adjustments.summary(changes, by)
    reason = args.reason or f"re-priced with {os.path.basename(args.rate_card)}"
    batch = None
    if not args.dry_run and changes:
        batch = adjustments.apply(conn, [(c.row, c.delta) for c in changes], version, reason)
    result = {"rate_card_version": version, "reason": reason, "dry_run": args.dry_run, "batch": batch,
              "period": period.describe(), "by": by, "groups": groups,
              "total": {"calls": len(changes), "adjustment_nano": sum(c.delta for c in changes)}}
    if args.format == "json":
        print_json(result)
        return 0
    headers = [f.upper() for f in by] + ["CALLS", "BEFORE", "ADJUSTMENT", "AFTER"]
    rows = [[str(g[f]) for f in by] + [count(g["calls"]), usd(g["before_nano"]), usd(g["adjustment_nano"]),
                                       usd(g["after_nano"])] for g in groups]
    print(f"re-price with rate card {version} ({reason})" + (": dry run, nothing written" if args.dry_run else ""))
    print()
    print(table(headers, rows, [False] * len(by) + [True] * 4) if rows else "no call changes price")
    if batch:
        print(f"\nwrote {len(changes):,} adjustment entries, batch {batch} (undo: tokentrail reprice --revert {batch})")
    return 0


def _show_batches(args: argparse.Namespace, items: list[dict]) -> int:
    if args.format == "json":
        print_json(items)
        return 0
    rows = [[b["batch"], b["rate_card_version"], b["reason"], count(b["entries"]), usd(b["delta_nano"])] for b in items]
    print(table(["BATCH", "RATE CARD", "REASON", "ENTRIES", "ADJUSTMENT"], rows, [False] * 3 + [True] * 2)
          if rows else "no adjustments")
    return 0
