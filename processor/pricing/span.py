"""Pricing a span from its attributes, the one place spans are priced.

``price_span``: our instrumentations before ``end()`` (an ended span is immutable);
``ensure_priced``: spans that arrive unpriced, in CostSpanProcessor and the ledger.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from tokentrail.processor.pricing import card as _card
from tokentrail.processor.pricing.quote import NO_USAGE, PRICED, UNPRICED, cost_of
from tokentrail.processor.usage import Usage, is_genai_call
from tokentrail.semconv import attributes as attr

logger = logging.getLogger("tokentrail.pricing")

_CURRENCY = "USD"
_SOURCE = "local"
_NANO_PER_USD = 1e9  # division (not * 1e-9) gives the correctly rounded float


def price_span(attributes: Mapping[str, Any], start_time_ns: int | None) -> dict[str, Any]:
    """The cost attributes to add to a GenAI call span; {} when not one or already priced.

    Never raises: malformed usage -> ``no_usage``; unknown model -> ``unpriced`` (no amounts).
    """
    try:
        if _COST_STATUS in attributes or not is_genai_call(attributes):
            return {}
        try:
            usage = Usage.from_attributes(attributes)
        except Exception:  # InvalidUsage or anything odd in a foreign span
            usage = None
        if usage is None:
            return {_COST_STATUS: NO_USAGE}
        get = attributes.get
        card = _card.card()
        resolved = card.lookup(get(_PROVIDER) or get(_SYSTEM), get(_RESPONSE_MODEL) or get(_REQUEST_MODEL),
                               get(_SERVICE_TIER))
        if resolved is None:
            return {_COST_STATUS: UNPRICED}
        rates = resolved.rates_at(_card.now_ns() if start_time_ns is None else start_time_ns)
        if rates is None:
            return {_COST_STATUS: UNPRICED}
        cost = cost_of(rates, usage)
        total = cost.total
        out = {
            _AMOUNT: total / _NANO_PER_USD,
            _CURRENCY_ATTR: _CURRENCY,
            _SOURCE_ATTR: _SOURCE,
            _INPUT: cost.input / _NANO_PER_USD,
            _CACHE_READ: cost.cache_read / _NANO_PER_USD,
            _CACHE_WRITE: cost.cache_write / _NANO_PER_USD,
            _OUTPUT: cost.output / _NANO_PER_USD,
            _FEES: cost.fees / _NANO_PER_USD,
            _NANO: total,
            _COST_STATUS: PRICED,
            _TIER: cost.tier,
            _PRICING_MODEL: resolved.pricing_model,
            _VERSION: card.version,
        }
        if usage.cache_read_tokens:
            out[_CACHE_SAVINGS] = cost.cache_savings(usage.cache_read_tokens) / _NANO_PER_USD
        return out
    except Exception:
        logger.debug("pricing failed; span marked unpriced", exc_info=True)
        return {_COST_STATUS: UNPRICED}


def ensure_priced(attributes: Mapping[str, Any], start_time_ns: int | None, *,
                  copy: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """A finished GenAI call span's attributes with its cost: (all of them as a plain dict, the
    cost attributes added). Nothing is added to a span priced already (ours, before end).
    ``copy=False``: ``attributes`` is a plain dict of the caller's own, completed in place."""
    # One plain-dict copy: the ~30 lookups of pricing and metrics on the SDK's BoundedAttributes
    # view are Python-level calls (a raised KeyError per missing key).
    plain = dict(attributes) if copy else attributes
    extra = price_span(plain, start_time_ns)
    if extra:
        plain.update(extra)
    return plain, extra


_COST_STATUS = attr.TOKENTRAIL_COST_STATUS
_PROVIDER = attr.GEN_AI_PROVIDER_NAME
_SYSTEM = attr.GEN_AI_SYSTEM
_RESPONSE_MODEL = attr.GEN_AI_RESPONSE_MODEL
_REQUEST_MODEL = attr.GEN_AI_REQUEST_MODEL
_SERVICE_TIER = attr.TOKENTRAIL_SERVICE_TIER
_AMOUNT = attr.GEN_AI_USAGE_COST_AMOUNT
_CURRENCY_ATTR = attr.GEN_AI_USAGE_COST_CURRENCY
_SOURCE_ATTR = attr.GEN_AI_USAGE_COST_SOURCE
_INPUT = attr.TOKENTRAIL_COST_INPUT
_CACHE_READ = attr.TOKENTRAIL_COST_CACHE_READ
_CACHE_SAVINGS = attr.TOKENTRAIL_COST_CACHE_SAVINGS
_CACHE_WRITE = attr.TOKENTRAIL_COST_CACHE_WRITE
_OUTPUT = attr.TOKENTRAIL_COST_OUTPUT
_FEES = attr.TOKENTRAIL_COST_FEES
_NANO = attr.TOKENTRAIL_COST_NANO_USD
_TIER = attr.TOKENTRAIL_PRICING_TIER
_PRICING_MODEL = attr.TOKENTRAIL_PRICING_MODEL
_VERSION = attr.TOKENTRAIL_RATE_CARD_VERSION
