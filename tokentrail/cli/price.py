"""``tokentrail price``: what one call costs on the rate card, and which entry priced it."""

from __future__ import annotations

import argparse

from tokentrail.cli import _common as c
from tokentrail.processor.usage import InvalidUsage, Usage


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "price",
        help="the cost of one call from token counts, with the rate-card entry and version",
        description="Price one call offline from the bundled rate card (genai-prices + overlay +"
        " TOKENTRAIL_RATE_CARD). --input counts all input tokens, including the cached ones.",
    )
    p.add_argument("model", help="model id, e.g. gpt-4o-mini or claude-sonnet-4")
    p.add_argument("--input", type=int, default=0, metavar="N", help="input tokens, cache reads and writes included")
    p.add_argument("--output", type=int, default=0, metavar="N", help="output tokens, reasoning included")
    p.add_argument("--cache-read", type=int, default=0, metavar="N", help="input tokens read from the prompt cache")
    p.add_argument("--cache-write", type=int, default=0, metavar="N", help="input tokens written to the prompt cache")
    p.add_argument("--reasoning", type=int, default=0, metavar="N", help="reasoning tokens (part of --output)")
    p.add_argument("--batch", action="store_true", help="price on the batch tier")
    p.add_argument("--provider", metavar="P", help="provider id when the model name is ambiguous (e.g. openai, anthropic)")
    c.add_format_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # genai-prices (pydantic, httpx) and the whole rate card load in ~0.3 s: only `tokentrail price`
    # pays for them, not every ledger command.
    from tokentrail.processor import pricing

    try:
        usage = Usage(
            input_tokens=args.input,
            output_tokens=args.output,
            cache_read_tokens=args.cache_read,
            cache_write_tokens=args.cache_write,
            reasoning_tokens=args.reasoning,
        ).validate()
    except InvalidUsage as exc:
        raise c.CliError(f"bad token counts: {exc}") from None
    quote = pricing.quote(args.model, usage, provider=args.provider, service_tier="batch" if args.batch else None)
    if quote.status != "priced":
        matches = pricing.close_matches(args.model, provider=args.provider)
        hint = f"; did you mean: {', '.join(matches[:5])}?" if matches else ""
        raise c.CliError(f"unknown model {args.model!r}: not on the rate card{hint}")
    data = {
        "model": args.model,
        "pricing_model": quote.pricing_model,
        "provider": quote.provider or args.provider,
        "tier": quote.tier,
        "rate_card_version": quote.rate_card_version,
        "usage": {
            "input_tokens": usage.input_tokens,
            "uncached_input_tokens": usage.uncached_input_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "output_tokens": usage.output_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
        },
        "components_nano_usd": dict(quote.components),
        "rates_usd_per_million": {k: str(v) for k, v in quote.unit_prices.items()},
        "sources": list(quote.sources),
        "total_nano_usd": quote.total_nano_usd,
        "total_usd": str(quote.total_usd),
    }
    if args.format == "json":
        c.print_json(data)
        return 0
    rows = [[name, c.usd(nano)] for name, nano in quote.components.items() if nano]
    rows.append(["total", c.usd(quote.total_nano_usd)])
    print(f"{args.model}: rate-card entry {quote.pricing_model}, tier {quote.tier}")
    rates = ", ".join(f"{k} ${v.normalize():f}" for k, v in quote.unit_prices.items())
    if rates:
        print(f"rates per 1M tokens: {rates}")
    for source in quote.sources:
        print(f"source: {source}")
    print()
    print(c.table(["component", "cost"], rows, [False, True]))
    print(f"\n= ${quote.total_usd.normalize():f} exactly (rate card {quote.rate_card_version})")
    return 0
