"""The ``tokentrail`` command: spend reports and traces from the ledger, pricing, the demo.

Each subcommand is a module here exposing ``register(subparsers)``; to add one, write the
module and add one import line below.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
from types import ModuleType
from typing import Sequence

from tokentrail.cli._common import CliError, USAGE_ERROR

from tokentrail.cli import report, top, trace, price, tenants, demo  # noqa: E401,F401  (order = --help order)
from tokentrail.cli import dashboards, collector, view  # noqa: E401,F401
from tokentrail.cli import reconcile, reprice, chargeback, margin, whatif, savings  # noqa: E401,F401


def _subcommand_modules() -> list[ModuleType]:
    return [
        m
        for m in globals().values()
        if isinstance(m, ModuleType) and m.__name__.startswith(__name__ + ".") and hasattr(m, "register")
    ]


def _version() -> str:
    try:
        return importlib.metadata.version("tokentrail")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokentrail",
        description="Who spent the LLM money: spend reports, expensive traces and prices from the tokentrail ledger.",
    )
    parser.add_argument("--version", action="version", version=f"tokentrail {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _subcommand_modules():
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Library warnings (e.g. pricing's "no price for model") must not clutter the one-line errors.
    logging.getLogger("tokentrail").addHandler(logging.NullHandler())
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return USAGE_ERROR
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"tokentrail: error: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:  # `tokentrail report | head`
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
