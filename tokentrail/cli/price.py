"""``tokentrail price``: what one call costs on the rate card, and which entry priced it."""

from __future__ import annotations

import argparse

from tokentrail.cli import _common as c
from tokentrail.processor.usage import InvalidUsage, Usage

#: No single call has more tokens than this (the largest context windows are ~10M): a typo, not a call.
MAX_TOKENS = 1_000_000_000
_COUNTS = ("input", "output", "cache_read", "cache_write", "reasoning")


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

    for name in _COUNTS:
        n = getattr(args, name)
        if not 0 <= n <= MAX_TOKENS:
            raise c.CliError(f"--{name.replace('_', '-')} {n}: give a token count from 0 to {MAX_TOKENS:,}")
    try:
        usage = Usage(
            input_tokens=args.input,
            output_tokens=args.output,
            cache_read_tokens=args.cache_read,
            cache_write_tokens=args.cache_write,
            reasoning_tokens=args.reasoning,
        ).validate()
    except InvalidUsage as exc:
        raise c.CliError(f"bad token counts: {exc} (--input counts all input, --output all output)") from None
    tier = "batch" if args.batch else None
    quote = pricing.quote(args.model, usage, provider=args.provider, service_tier=tier)
    if quote.status != "priced":
        raise c.CliError(_unknown_model(pricing, args.model, args.provider, usage, tier))
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


def _unknown_model(pricing, model: str, provider: str | None, usage: Usage, tier: str | None) -> str:
    """Why ``model`` has no price, and what the user may have meant (never just what they typed)."""
    if provider:
        elsewhere = pricing.quote(model, usage, service_tier=tier)
        if elsewhere.status == "priced":
            retry = f"--provider {elsewhere.provider}" if elsewhere.provider else "without --provider"
            return (f"model {model!r} has no price under provider {provider!r} but is on the rate card"
                    f" under another provider: tokentrail price {model} {retry}")
    typed = model.strip().lower()
    matches = [m for m in pricing.close_matches(model, provider=provider, n=6) if m.lower() != typed]
    if provider and len(matches) < 5:
        matches += [m for m in pricing.close_matches(model, n=6) if m.lower() != typed and m not in matches]
    if typed in (n.lower() for n in pricing.close_matches(model, n=1)):
        head = f"model {model!r} is listed but has no price on the rate card (add it with TOKENTRAIL_RATE_CARD)"
    else:
        head = f"unknown model {model!r}: not on the rate card"
    return head + (f"; did you mean: {', '.join(matches[:5])}?" if matches else "")
