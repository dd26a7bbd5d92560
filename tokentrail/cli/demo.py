"""``tokentrail demo``: a seeded multi-tenant workload through the real pipeline into a ledger."""

from __future__ import annotations

import argparse

from tokentrail.cli import _common as c


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
    try:
        import openai  # noqa: F401  (the demo drives the real SDK)
    except ImportError:
        raise c.CliError("tokentrail demo drives the real openai SDK: pip install 'tokentrail[openai]'") from None
    from tokentrail import demo

    return demo.main(ledger=args.ledger, seed=args.seed, keep=args.keep, quiet=args.quiet)
