"""Shared CLI pieces: errors, the ledger/period options, and plain-text formatting."""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from typing import Any, Callable, Sequence

from tokentrail.ledger import LedgerError, default_path
from tokentrail.ledger.queries import FIELDS, Ledger, Period, check_fields, parse_where

USAGE_ERROR = 2
NANO = 10**9


class CliError(Exception):
    """One clear line for the user; exit code 2."""

    def __init__(self, message: str, code: int = USAGE_ERROR) -> None:
        super().__init__(message)
        self.code = code


def add_ledger_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ledger",
        metavar="PATH",
        help="the ledger file (default: $TOKENTRAIL_LEDGER or ./tokentrail.db)",
    )


def add_period_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="WHEN", help="start of the period: 7d, 24h, 30m, 2w ago, or a date (2026-11-01)")
    parser.add_argument("--until", metavar="WHEN", help="end of the period (default: now), same forms as --since")
    parser.add_argument(
        "--where",
        metavar="FIELD=VALUE",
        action="append",
        default=[],
        help="keep only matching calls, e.g. tenant=acme (repeatable; an empty value selects unattributed)",
    )


def add_by_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--by", default=default, metavar="FIELDS", help=f"comma-separated fields to group by"
                        f" (default: {default}); any of: {', '.join(FIELDS)}")


def by_fields(args: argparse.Namespace, example: str) -> list[str]:
    """The checked ``--by`` fields, at least one."""
    by = query(check_fields, args.by.split(","))
    if not by:
        raise CliError(f"--by needs at least one field, e.g. --by {example}")
    return by


def add_format_option(parser: argparse.ArgumentParser, choices: Sequence[str] = ("table", "json")) -> None:
    parser.add_argument("--format", choices=choices, default="table", help="output format (default: table)")


def open_ledger(args: argparse.Namespace) -> Ledger:
    try:
        return Ledger(args.ledger or default_path())
    except LedgerError as exc:
        raise CliError(str(exc)) from None


def period_and_where(args: argparse.Namespace) -> tuple[Period, list]:
    """The ``--since``/``--until`` period and the ``--where`` pairs, or one-line errors."""
    return query(Period.parse, args.since, args.until), query(parse_where, args.where)


def query(fn, *a: Any, **kw: Any) -> Any:
    """Run a ledger query, turning its user-facing errors into one-line CLI errors."""
    try:
        return fn(*a, **kw)
    except LedgerError as exc:
        raise CliError(str(exc)) from None


# --- formatting --------------------------------------------------------------------------------
def usd(nano: int | None) -> str:
    if nano is None:
        return "-"
    return f"${Decimal(nano) / NANO:,.6f}"  # one precision everywhere: figures compare at a glance


def cost(nano: int | None, row: dict | None = None) -> str:
    """A cost cell: dollars, or why there is none (never $0 for spend that could not be priced)."""
    if nano is not None:
        return usd(nano)
    return "no cost" + (f" ({why})" if (why := no_cost_why(row or {})) else "")


def no_cost_why(row: dict) -> str:
    """``3 unpriced, 1 no usage, 1 blocked`` from a row's per-kind counts of calls without a cost."""
    parts = [(row.get("unpriced_calls"), "unpriced"), (row.get("no_usage_calls"), "no usage"),
             (row.get("blocked_calls", row.get("stopped_calls")), "blocked")]
    return ", ".join(f"{n:,} {what}" for n, what in parts if n)


def count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def pct(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f}%"


def change(x: float | None, previous: int | None) -> str:
    if x is None:
        return "new" if previous == 0 else "-"
    return f"{x * 100:+.0f}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    right = right or [False] * len(headers)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def emit(fmt: str, data: Any, render: Callable[[Any], str], write_csv: Callable[[Any], None] | None = None) -> int:
    """A command's answer in its ``--format``: JSON, CSV (when the command has it) or the table."""
    if fmt == "json":
        print_json(data)
    elif fmt == "csv" and write_csv is not None:
        write_csv(data)
    else:
        print(render(data))
    return 0
