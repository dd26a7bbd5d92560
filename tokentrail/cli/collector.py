"""``tokentrail collector pricing``: the rate card as a Collector ``transform`` processor (OTTL) that prices
GenAI spans from services in any language, for the models listed or those seen in a ledger."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from tokentrail.cli import _common as c


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("collector", help="configuration for the OpenTelemetry Collector",
                              description="Configuration for the OpenTelemetry Collector (otelcol-contrib).")
    sub = p.add_subparsers(dest="collector_command", metavar="COMMAND")
    pricing = sub.add_parser(
        "pricing",
        help="a transform processor (OTTL) that prices GenAI spans arriving without a cost",
        description="Write a transform processor configuration that prices, at the Collector, the GenAI spans"
        " of any language's instrumentation which arrive without a cost (the same attributes and exact nano-USD"
        " as the Python processor, from the same rate card incl. TOKENTRAIL_RATE_CARD). Models not listed are"
        " marked unpriced. Merge the output over the Collector config: --config=collector-config.yaml"
        " --config=<output>.",
    )
    pricing.add_argument("--models", metavar="SPECS", action="append", default=[],
                         help="[provider:]model, comma-separated, globs allowed (e.g. 'openai:gpt-4o*,claude-sonnet-4*');"
                         " repeatable. Without it: the models seen in the ledger")
    c.add_ledger_option(pricing)
    pricing.add_argument("--config", metavar="PATH", type=Path,
                         help="the Collector config to add the processor to: the output then also sets its"
                         " pipeline's processor list (pricing after memory_limiter, before sampling and batching)")
    pricing.add_argument("--pipeline", metavar="NAME", default="traces",
                         help="the traces pipeline of --config to price in (default: traces)")
    pricing.add_argument("-o", "--output", metavar="PATH", type=Path, help="write here (default: stdout)")
    pricing.set_defaults(func=run_pricing)
    p.set_defaults(func=lambda args: (p.print_help(), c.USAGE_ERROR)[1])


def run_pricing(args: argparse.Namespace) -> int:
    # the rate card (genai-prices, pydantic) loads only for this command
    from tokentrail.processor.pricing import ottl

    specs = [s for item in args.models for s in item.split(",") if s.strip()]
    try:
        models = ottl.expand(specs) if specs else _ledger_models(args)
    except ottl.GenerateError as exc:
        raise c.CliError(str(exc)) from None
    if not models:
        raise c.CliError("no models: give --models, or a ledger with priced calls (--ledger)")
    config, skipped = ottl.processor_config(models)
    pipelines = _pipelines(args.config, args.pipeline) if args.config else None
    text = ottl.render(config, pipelines=pipelines)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    for name in skipped:
        print(f"tokentrail: not priced at the Collector (marked unpriced): {name}", file=sys.stderr)
    return 0


def _ledger_models(args: argparse.Namespace) -> list[tuple[str | None, str]]:
    with c.open_ledger(args) as ledger:
        rows = ledger.conn.execute(
            "SELECT DISTINCT lower(provider), lower(coalesce(nullif(response_model, ''), request_model)) FROM spans"
            " WHERE llm = 1 AND coalesce(nullif(response_model, ''), request_model) IS NOT NULL"
        ).fetchall()
    return sorted({(p or None, m) for p, m in rows}, key=lambda pm: (pm[0] or "", pm[1]))


def _pipelines(path: Path, name: str) -> dict[str, list[str]]:
    from tokentrail.processor.pricing import ottl

    try:
        config = yaml.safe_load(path.read_text()) or {}
        processors = config["service"]["pipelines"][name].get("processors") or []
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise c.CliError(f"{path}: no pipeline {name!r} to add pricing to ({exc.__class__.__name__})") from None
    return {name: ottl.with_pricing(processors)}
