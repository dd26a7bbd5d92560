"""``tokentrail trace``: one trace's span tree with per-span model, tokens, cache hits and cost."""

from __future__ import annotations

import argparse

from tokentrail.cli import _common as c


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "trace",
        help="a trace's span tree with per-span model, tokens, cache hits, cost and cumulative cost",
        description="Show one trace as a span tree: per span the model, input/cached/output tokens, cache-hit"
        " ratio, cost and the cumulative cost so far. A unique prefix of the trace id is enough.",
    )
    p.add_argument("trace_id", metavar="TRACE_ID", help="the hex trace id, or a unique prefix of it")
    c.add_format_option(p)
    c.add_ledger_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with c.open_ledger(args) as ledger:
        data = c.query(ledger.trace, args.trace_id)
    return c.emit(args.format, data, render)


def render(data: dict) -> str:
    rows = []
    for s in data["spans"]:
        name = "  " * s["depth"] + s["name"]
        marks = []
        if s.get("retry_attempt"):
            marks.append(f"retry {s['retry_attempt']}")
        if s.get("fallback_from"):
            marks.append(f"fallback from {s['fallback_from']}")
        if s.get("error_type"):
            marks.append(f"error {s['error_type']}")
        if s["llm"]:
            cost = c.usd(s["cost_nano_usd"]) if s["cost_nano_usd"] is not None else (
                f"no cost ({s['cost_status'] or 'unknown'})")
            rows.append([name, s.get("model") or "", c.count(s["input_tokens"]), c.count(s["cache_read_tokens"]),
                         c.count(s["output_tokens"]), c.pct(s["cache_hit_ratio"]), cost,
                         c.usd(s["cumulative_cost_nano_usd"]), ", ".join(marks)])
        else:
            subtree = f"({c.usd(s['subtree_cost_nano_usd'])})" if s["subtree_cost_nano_usd"] else ""
            rows.append([name, "", "", "", "", "", subtree, c.usd(s["cumulative_cost_nano_usd"]), ", ".join(marks)])
    owner = ", ".join(f"{k}={v}" for k, v in data["owner"].items()) or "unattributed"
    calls = f"{data['calls']} LLM call{'s' if data['calls'] != 1 else ''}"
    head = f"trace {data['trace_id']}  {owner}  {calls}  {c.cost(data['cost_nano_usd'])}"
    body = c.table(["span", "model", "input", "cached", "output", "hit", "cost", "cumulative", ""], rows,
                   [False, False, True, True, True, True, True, True, False])
    return f"{head}\n\n{body}\n\n(cost in parentheses: the span's subtree)"
