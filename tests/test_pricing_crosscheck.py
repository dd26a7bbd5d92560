"""The rate card against genai-prices' own ``calc_price``, for every model in the installed data.

Every model of every provider table, at the start of each of its price periods (and of each
service-tier price variant), under several usages: plain, cached (reads, 5-minute and 1-hour
writes), reasoning, and input just above each long-context threshold; and each service tier
the data prices (genai-prices 0.2.3: 2,330 models, about 9,200 cases, a few seconds). Token
counts are multiples of 1,000, so every component is a whole number of nano-USD on both sides:
agreement is exact. The deliberate differences are listed in ``DELIBERATE``, each with its
reason; anything else that differs fails. Not compared: units tokentrail does not measure
(audio hours, characters, pages, citation tokens), whose calls are ``unpriced``, never $0; the
tiers the data has no price for (their fallbacks are billing rules, tested in test_pricing_rules).
"""

from __future__ import annotations

import datetime as dt
import warnings
from decimal import ROUND_HALF_UP, Decimal

import genai_prices
import pytest
from genai_prices import data as gp_data
from genai_prices import types as gp

from tokentrail.processor import pricing
from tokentrail.processor.pricing import quote
from tokentrail.processor.usage import Usage

UTC = dt.timezone.utc
_BEFORE_ANY_DATE = dt.datetime(2024, 6, 1, tzinfo=UTC)
_NANO = Decimal(10) ** 9

#: Our usage per shape (cache writes include the 1-hour ones, output the reasoning); long context
#: is added per threshold of each model.
USAGES = {
    "plain": dict(input_tokens=12_000, output_tokens=3_000),
    "cached": dict(input_tokens=20_000, cache_read_tokens=6_000, cache_write_tokens=3_000, cache_write_1h_tokens=1_000,
                   output_tokens=2_000),
    "reasoning": dict(input_tokens=3_000, output_tokens=5_000, reasoning_tokens=3_000),
}

#: genai-prices price contexts -> the service tier a span reports.
TIERS = {(("processing", "batch"),): "batch", (("service_tier", "flex"),): "flex",
         (("service_tier", "priority"),): "priority"}


def _gp_usage(ours: dict) -> genai_prices.Usage:
    kwargs = {k: v for k, v in ours.items() if k != "reasoning_tokens"}
    if "reasoning_tokens" in ours:
        kwargs["output_reasoning_tokens"] = ours["reasoning_tokens"]
    return genai_prices.Usage(**kwargs)


def _dates(model: gp.ModelInfo) -> list[dt.datetime]:
    """The start of each price period of ``model`` (its variants' too)."""
    starts = {_BEFORE_ANY_DATE}
    conditions = [c.constraint for c in model.prices] if isinstance(model.prices, list) else []
    conditions += [v.constraint for v in model.price_variants or ()]
    for c in conditions:
        if isinstance(c, gp.StartDateConstraint):
            starts.add(dt.datetime.combine(c.start_date, dt.time(), tzinfo=UTC))
        elif isinstance(c, gp.TimeOfDateConstraint):
            starts.add(dt.datetime.combine(dt.date(2026, 6, 1), c.start_time, tzinfo=UTC))
    return sorted(starts)


def _thresholds(price: gp.ModelPrice) -> set[int]:
    return {t.start for v in price.__dict__.values() if isinstance(v, gp.TieredPrices) for t in v.tiers}


def _cases():
    """(provider id, model, date, usage name, our usage, price context) for the whole data."""
    for provider in gp_data.providers:
        for model in provider.models:
            for at in _dates(model):
                try:
                    base = model.get_prices(at)
                except Exception:
                    continue  # no price in force yet
                usages = dict(USAGES)
                for t in sorted(_thresholds(base)):
                    usages[f"above {t}"] = dict(input_tokens=t + 1_000, output_tokens=1_000)
                contexts: list = [None]
                for variant in model.price_variants or ():
                    key = tuple(sorted(variant.when.items()))
                    if key in TIERS and (variant.constraint is None or variant.constraint.active(at)):
                        contexts.append(variant.when)
                for context in contexts:
                    for name, ours in usages.items():
                        yield provider, model, at, name, ours, context


def _reference(provider: gp.Provider, model: gp.ModelInfo, at: dt.datetime, ours: dict, context) -> Decimal | None:
    usage = _gp_usage(ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return genai_prices.calc_price(usage, model.id, provider_id=provider.id, genai_request_timestamp=at,
                                           price_context=context).total_price
        except LookupError:
            # An id its own match rules do not resolve (Bedrock regional.*): the listed entry's price.
            return model.calc_price(usage, provider, genai_request_timestamp=at, price_context=context).total_price
        except Exception:
            return None  # units genai-prices itself cannot price for this usage


#: The deliberate differences, each with its reason.
DELIBERATE = {
    "overlay": "a bundled overlay correction (overlay.yaml; each entry cites its source)",
    "claude_cache": "Claude cache prices the data omits are Anthropic's multipliers of the input price "
                    "(billing_rules.yaml cache_prices); genai-prices bills those tokens as plain input",
}


def _deliberate(provider_id: str, model: gp.ModelInfo, at: dt.datetime, name: str, context, q) -> str | None:
    """Which listed deliberate difference explains this case, or None."""
    if any(s.startswith("overlay:") for s in q.sources):
        return "overlay"
    price = model.get_prices(at, context)
    omitted = any(getattr(price, key, None) is None for key in ("cache_read_mtok", "cache_write_mtok",
                                                                "cache_write_1h_mtok"))
    if name == "cached" and "claude" in model.id and provider_id in ("anthropic", "aws", "google") and omitted:
        return "claude_cache"
    return None


def _nano(usd: Decimal) -> int:
    # Prices are kept in femto-USD per token: data with more digits (float artefacts of imported
    # prices, e.g. $0.18000000002 per M) differs below a nano-dollar; both sides round to nano-USD.
    return int((usd * _NANO).to_integral_value(rounding=ROUND_HALF_UP))


def test_every_genai_prices_model_agrees_exactly_except_the_listed_deliberate_differences():
    pricing.reload()
    agreed = 0
    deliberate: dict[str, int] = {}
    models, mismatches = set(), []
    for provider, model, at, name, ours, context in _cases():
        ref = _reference(provider, model, at, ours, context)
        if ref is None:
            continue
        tier = TIERS[tuple(sorted(context.items()))] if context else None
        q = quote(model.id, Usage(**ours), provider=provider.id, at=at, service_tier=tier)
        case = (provider.id, model.id, str(at.date()), name, tier)
        if not q.priced:
            if ref != 0:
                mismatches.append((*case, "unpriced", ref))
            continue  # else priced only in units we do not measure (audio hours, characters, pages)
        if q.total_nano_usd == _nano(ref) and (tier is None or q.tier.split(",")[0] == tier):
            agreed += 1
            models.add((provider.id, model.id))
            continue
        why = _deliberate(provider.id, model, at, name, context, q)
        if why is None:
            mismatches.append((*case, q.total_nano_usd, _nano(ref), q.tier))
        else:
            deliberate[why] = deliberate.get(why, 0) + 1
    assert not mismatches, f"{len(mismatches)} cases differ: {mismatches[:20]}"
    assert agreed > 9_000 and len(models) > 2_000, (agreed, len(models))
    assert set(deliberate) <= set(DELIBERATE)
