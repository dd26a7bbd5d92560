"""Pricing a span from its attributes: what CostSpanProcessor and the instrumentations call."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from tokentrail.processor.pricing.quote import NO_USAGE, PRICED, UNPRICED, quote
from tokentrail.processor.usage import Usage
from tokentrail.semconv import attributes as attr

logger = logging.getLogger("tokentrail.pricing")

# Spans that wrap LLM calls (agents, tools) may repeat their children's usage: never price them.
_NOT_LLM_OPERATIONS = frozenset({"invoke_agent", "create_agent", "execute_tool"})
_LLM_MARKERS = (
    attr.GEN_AI_REQUEST_MODEL,
    attr.GEN_AI_RESPONSE_MODEL,
    attr.GEN_AI_USAGE_INPUT_TOKENS,
    attr.GEN_AI_USAGE_OUTPUT_TOKENS,
)
_CURRENCY = "USD"
_SOURCE = "local"
_NANO_PER_USD = 1e9  # division (not * 1e-9) gives the correctly rounded float


def is_llm_span(attributes: Mapping[str, Any]) -> bool:
    """True for a span describing one model call (chat, completion, embeddings, generate_content...)."""
    try:
        if attributes.get(attr.GEN_AI_OPERATION_NAME) in _NOT_LLM_OPERATIONS:
            return False
        for name in _LLM_MARKERS:
            if name in attributes:
                return True
        return False
    except Exception:  # a foreign attributes object misbehaving must not break the pipeline
        return False


def price_span(attributes: Mapping[str, Any], start_time_ns: int | None) -> dict[str, Any]:
    """The cost attributes to add to an LLM span; {} when not an LLM span or already priced.

    Never raises: malformed usage -> ``no_usage``; unknown model -> ``unpriced`` (no amounts).
    """
    try:
        if attr.TOKENTRAIL_COST_STATUS in attributes or not is_llm_span(attributes):
            return {}
        try:
            usage = Usage.from_attributes(attributes)
        except Exception:  # InvalidUsage or anything odd in a foreign span
            usage = None
        if usage is None:
            return {attr.TOKENTRAIL_COST_STATUS: NO_USAGE}
        get = attributes.get
        model = get(attr.GEN_AI_RESPONSE_MODEL) or get(attr.GEN_AI_REQUEST_MODEL)
        provider = get(attr.GEN_AI_PROVIDER_NAME) or get(attr.GEN_AI_SYSTEM)
        q = quote(model, usage, provider=provider, at=start_time_ns, service_tier=get(attr.TOKENTRAIL_SERVICE_TIER))
        if q.status != PRICED:
            return {attr.TOKENTRAIL_COST_STATUS: q.status}
        c = q.components
        return {
            attr.GEN_AI_USAGE_COST_AMOUNT: q.total_nano_usd / _NANO_PER_USD,
            attr.GEN_AI_USAGE_COST_CURRENCY: _CURRENCY,
            attr.GEN_AI_USAGE_COST_SOURCE: _SOURCE,
            attr.TOKENTRAIL_COST_INPUT: c["input"] / _NANO_PER_USD,
            attr.TOKENTRAIL_COST_CACHE_READ: c["cache_read"] / _NANO_PER_USD,
            attr.TOKENTRAIL_COST_CACHE_WRITE: c["cache_write"] / _NANO_PER_USD,
            attr.TOKENTRAIL_COST_OUTPUT: c["output"] / _NANO_PER_USD,
            attr.TOKENTRAIL_COST_FEES: c["fees"] / _NANO_PER_USD,
            attr.TOKENTRAIL_COST_NANO_USD: q.total_nano_usd,
            attr.TOKENTRAIL_COST_STATUS: PRICED,
            attr.TOKENTRAIL_PRICING_TIER: q.tier,
            attr.TOKENTRAIL_PRICING_MODEL: q.pricing_model,
            attr.TOKENTRAIL_RATE_CARD_VERSION: q.rate_card_version,
        }
    except Exception:
        logger.debug("pricing failed; span marked unpriced", exc_info=True)
        return {attr.TOKENTRAIL_COST_STATUS: UNPRICED}
