"""``tokentrail top``: the most expensive traces and tasks, and what made them expensive."""

from __future__ import annotations

import argparse

from tokentrail.cli import _common as c

MAX_LIMIT = 100_000


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "top",
        help="the most expensive traces and agent tasks, with owner and reasons",
        description="The most expensive traces and agent tasks in the period, with owner, calls, cost and what"
        " made each expensive (long prompt, low cache hits, retries, fallback, long output, many calls,"
        " a multiple of the median task).",
    )
    p.add_argument("-n", "--limit", type=int, default=10, help="how many of each (default: 10)")
    p.add_argument("--only", choices=("traces", "tasks"), help="show only traces or only tasks")
    c.add_period_options(p)
    c.add_format_option(p)
    c.add_ledger_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= MAX_LIMIT:
        raise c.CliError(f"--limit must be between 1 and {MAX_LIMIT:,}")
    period, where = c.period_and_where(args)
    with c.open_ledger(args) as ledger:
        data = c.query(ledger.top, period, where, args.limit)
    if args.only:
        data.pop("tasks" if args.only == "traces" else "traces")
    return c.emit(args.format, data, render)


def _owner(item: dict) -> str:
    owner = item["owner"]
    return "/".join(owner[k] for k in ("tenant", "feature") if k in owner) or "(unattributed)"


def _money(item: dict, adjusted: bool) -> list[str]:
    """The cost cell, and when the period was re-priced the adjustment and net cells."""
    out = [c.cost(item["cost_nano_usd"], item)]
    return out + [c.usd(item["adjustment_nano_usd"]), c.cost(item["net_cost_nano_usd"], item)] if adjusted else out


def render(data: dict) -> str:
    out = []
    adjusted = any("net_cost_nano_usd" in t for t in (*data.get("traces", ()), *data.get("tasks", ())))
    money = ["cost"] + (["adjustment", "net"] if adjusted else [])
    right = [False, False, False, True] + [True] * len(money) + [False]
    if "traces" in data:
        rows = [
            [t["trace_id"], t["root"] or "", _owner(t), c.count(t["calls"]), *_money(t, adjusted),
             "; ".join(t["reasons"]) or "-"]
            for t in data["traces"]
        ]
        out += ["Most expensive traces",
                c.table(["trace", "root span", "owner", "calls", *money, "why"], rows, right), ""]
    if "tasks" in data:
        rows = [
            [t["task"] or "", t["task_id"], _owner(t), c.count(t["calls"]), *_money(t, adjusted),
             "; ".join(t["reasons"]) or "-"]
            for t in data["tasks"]
        ]
        out += ["Most expensive tasks",
                c.table(["task", "task id", "owner", "calls", *money, "why"], rows, right)
                if rows else "(no agent tasks in this period)", ""]
    out.append("Open one with: tokentrail trace <trace id or a unique prefix>")
    return "\n".join(out)
