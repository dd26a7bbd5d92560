"""``tokentrail demo``: a seeded multi-tenant workload through the real pipeline into a ledger, then
the report, the most expensive traces and tasks, and the most expensive trace (``workload`` runs it);
beside the ledger, the demo tenants' plans, so ``tokentrail margin`` has revenue to set costs against."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sqlite3
import sys
from typing import Any

from tokentrail.cli import _common as c
from tokentrail.cli import margin as margin_cmd
from tokentrail.cli import report as report_cmd
from tokentrail.cli import top as top_cmd
from tokentrail.cli import trace as trace_cmd
from tokentrail.ledger import default_path
from tokentrail.ledger.queries import Ledger, Period
from tokentrail.ledger.queries import margin as margin_q
from tokentrail.plans import load as load_plans

#: service.name of the demo's spans (a ledger holding any other service is never overwritten)
SERVICE = "tokentrail-demo"
#: The demo tenants' plans: $19/$49/$99 a month scaled down 50x, as the demo's spend is small (about
#: $2 over four weeks). initech, whose agent runs away and whose contracts are long, is on the cheapest.
PLANS_MARK = "# written by tokentrail demo"
PLANS = f"""{PLANS_MARK} (rewritten on each run; a file without this line is never overwritten)
# Demo prices: the usual $0 / $19 / $49 / $99 a month plans, scaled down 50x to the demo's small spend.
plans:
  free: 0
  starter: 0.38
  team: 0.98
  pro: 1.98
tenants:
  acme: pro
  globex: pro
  umbrella: pro
  initech: starter
  hooli: team       # served by a self-hosted model: no cost, so no margin (never 100%)
  stark: free       # signed up, no spend yet
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run a realistic multi-tenant workload against the built-in fake provider, then report",
        description="Runs a deterministic multi-tenant workload through the real openai SDK against tokentrail's"
        " built-in fake provider, under the real pipeline (instrumentation, attribution and cost processors,"
        " ledger exporter); then prints the spend report and the most expensive trace. The ledger stays for"
        " further queries (tokentrail report/top/trace/tenants --ledger PATH).",
    )
    p.add_argument("--ledger", metavar="PATH", default=None,
                   help="where to write the ledger (default: $TOKENTRAIL_LEDGER or ./tokentrail.db)")
    p.add_argument("--seed", type=int, default=7, help="workload seed (default: 7)")
    p.add_argument("--keep", action="store_true", help="add to an existing ledger instead of starting it afresh")
    p.add_argument("--quiet", action="store_true", help="only write the ledger, print nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("openai") is None:
        raise c.CliError("tokentrail demo drives the real openai SDK: pip install 'tokentrail[openai]'")
    # The workload imports the openai SDK (an optional extra) and the whole pipeline: only the demo pays for them.
    from tokentrail.cli.demo import workload

    path = args.ledger or default_path()
    _prepare(path, args.keep)
    seed = _free_seed(path, args.seed) if args.keep else args.seed
    if seed != args.seed and not args.quiet:
        print(f"tokentrail demo: seed {args.seed} is already in {path}; --keep adds the seed {seed} workload")
    counts = workload.run_workload(path, seed)
    plans_path, plans_written = _write_plans(path)
    if args.quiet:
        return 0
    out = sys.stdout
    llm_calls = counts["calls"] + counts["blocked"]
    out.write(f"tokentrail demo: {llm_calls} LLM calls through the real openai SDK and pipeline"
              f" ({counts['calls']} sent to the fake provider, {counts['blocked']} stopped by a circuit breaker"
              f" before sending), spread over the past {counts['days']} days; {counts['written']} spans in the"
              f" ledger {path}" + (f" ({counts['dropped']} dropped)" if counts["dropped"] else "") + "\n\n")
    everything = Period.parse(None, None)
    with Ledger(path) as led:
        out.write(report_cmd.render(led.report(["tenant"], everything)) + "\n\n")
        out.write(report_cmd.render(led.report(["feature"], everything)) + "\n\n")
        top = led.top(everything, limit=5)
        out.write(top_cmd.render(top) + "\n\n")
        if top["traces"]:
            out.write("The most expensive trace:\n")
            out.write(trace_cmd.render(led.trace(top["traces"][0]["trace_id"])) + "\n\n")
    if counts["breaker"]:
        out.write(breaker_lines(counts["breaker"]) + "\n")
    out.write(plans_lines(path, plans_path, plans_written) + "\n")
    flag = f" --ledger {path}" if args.ledger else ""
    out.write(
        "Ask more:\n"
        f"  tokentrail tenants --where feature=support-chat{flag}  # same feature, same model: cache hits per tenant\n"
        f"  tokentrail report --by day --since 14d{flag}  # spend per day, against the 14 days before\n"
        f"  tokentrail report --by task,model{flag}  # any of tenant,feature,team,user,task,provider,model,day\n"
        f"  tokentrail top --only tasks{flag}        # the runaway agent runs\n"
        f"  tokentrail margin{flag}                  # revenue against LLM cost per tenant and plan\n"
        f"  tokentrail savings{flag}                 # waste, caching, batch, output caps, cheaper models, in dollars\n"
        f"  tokentrail whatif --model gpt-4.1-mini{flag}  # every feature's real tokens on another model\n"
        f"  tokentrail view{flag}                    # all of it as one offline HTML page: tokentrail.html\n"
        f"  tokentrail price gpt-4o --input 2000 --output 500\n"
    )
    return 0


def _write_plans(ledger: str) -> tuple[str, bool]:
    """The demo's plans beside its ledger (where ``tokentrail margin`` looks); never over a file of the user's."""
    path = margin_cmd.plans_beside(ledger)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            if not fh.readline().startswith(PLANS_MARK):
                return path, False
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(PLANS)
    return path, True


def plans_lines(ledger: str, plans_path: str, written: bool) -> str:
    """Where the demo's plans are and the tenant losing the most money, in two lines."""
    if not written:
        return (f"Plans: {plans_path} is not the demo's, left as it is; `tokentrail margin` reads it.\n")
    with Ledger(ledger) as led:
        data = margin_q.margin(led, margin_cmd.default_period(), load_plans(plans_path))
    losing = [r for r in data["tenants"] if r["losing_money"]]
    head = (f"Plans: {plans_path} (demo prices: $19/$49/$99 plans scaled down 50x to the demo's spend);"
            " `tokentrail margin` reads it.\n")
    if not losing:
        return head
    worst = losing[0]
    return head + (f"  {worst['tenant']} on {worst['plan']} cost {c.usd(worst['cost_nano_usd'])} in LLM calls over the"
                   f" last {margin_cmd.DEFAULT_DAYS} days for {c.usd(worst['revenue_nano_usd'])} of revenue:"
                   f" a margin of {c.pct(worst['margin_pct'], 1)}.\n")


def _prepare(path: str, keep: bool) -> None:
    """Start a fresh demo ledger, but never delete a ledger holding anything but demo spans."""
    if keep or not os.path.exists(path):
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            services = {r[0] for r in conn.execute("SELECT DISTINCT service FROM spans")}
        finally:
            conn.close()
    except sqlite3.Error:
        services = {"?"}
    if services - {SERVICE}:
        raise c.CliError(f"{path} already holds spans that are not from the demo: use --ledger PATH or --keep")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def _free_seed(path: str, seed: int) -> int:
    """``seed``, or the next seed whose workload is not in the ledger yet (the same seed writes the same
    span ids, which the ledger would silently ignore)."""
    from tokentrail.cli.demo.workload import first_trace_id

    if not os.path.exists(path):
        return seed
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            while conn.execute("SELECT 1 FROM spans WHERE trace_id = ? LIMIT 1", (first_trace_id(seed),)).fetchone():
                seed += 1
        finally:
            conn.close()
    except sqlite3.Error:
        pass
    return seed


def breaker_lines(breaker: dict[str, Any] | None) -> str:
    """What the runaway loop's circuit breaker did, in two lines (empty if it never fired)."""
    if not breaker:
        return ""
    spent = breaker["spent_nano_usd"] or 0
    limit_nano = int(round(breaker["limit_usd"] * 10**9))
    over = spent - limit_nano
    return (f"Circuit breaker: task {breaker['task']} ({breaker['task_id']}) kept retrying an invalid JSON answer; "
            f"the {breaker['limit']} breaker stopped call {breaker['calls'] + 1} before it was sent.\n"
            f"  {breaker['calls'] + 1} calls: {breaker['calls']} sent, {c.usd(spent)} spent of its"
            f" {c.usd(limit_nano)} limit " + ("(zero overshoot)" if over <= 0 else f"(overshoot {c.usd(over)})")
            + f", and 1 stopped (never billed); outcome {breaker['outcome']}.\n")
