"""Pricing a span from its attributes: what CostSpanProcessor and the instrumentations call."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from tokentrail.processor.pricing import card as _card
from tokentrail.processor.pricing.quote import _FEMTO_PER_NANO, _HALF_NANO, NO_USAGE, PRICED, UNPRICED, price_counts
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
        if _COST_STATUS in attributes or not is_llm_span(attributes):
            return {}
        counts = _usage_counts(attributes)
        if counts is None:
            return {_COST_STATUS: NO_USAGE}
        get = attributes.get
        card = _card.card()
        priced = price_counts(
            card,
            get(_PROVIDER) or get(_SYSTEM),
            get(_RESPONSE_MODEL) or get(_REQUEST_MODEL),
            get(_SERVICE_TIER),
            _card.now_ns() if start_time_ns is None else start_time_ns,
            *counts,
        )
        if priced.__class__ is not tuple:
            return {_COST_STATUS: UNPRICED}
        resolved, _, flat, label, c_input, c_read, c_write, c_output, c_fees = priced
        total = c_input + c_read + c_write + c_output + c_fees
        out = {
            _AMOUNT: total / _NANO_PER_USD,
            _CURRENCY_ATTR: _CURRENCY,
            _SOURCE_ATTR: _SOURCE,
            _INPUT: c_input / _NANO_PER_USD,
            _CACHE_READ: c_read / _NANO_PER_USD,
            _CACHE_WRITE: c_write / _NANO_PER_USD,
            _OUTPUT: c_output / _NANO_PER_USD,
            _FEES: c_fees / _NANO_PER_USD,
            _NANO: total,
            _COST_STATUS: PRICED,
            _TIER: label,
            _PRICING_MODEL: resolved.pricing_model,
            _VERSION: card.version,
        }
        if counts[1]:  # cache reads: what they would have cost as fresh input, minus what they cost
            fresh = (counts[1] * flat[0] + _HALF_NANO) // _FEMTO_PER_NANO
            out[_CACHE_SAVINGS] = (fresh - c_read) / _NANO_PER_USD
        return out
    except Exception:
        logger.debug("pricing failed; span marked unpriced", exc_info=True)
        return {_COST_STATUS: UNPRICED}


def _usage_counts(attributes: Mapping[str, Any]) -> tuple | None:
    """(input, cache_read, cache_write, cache_write_1h, output, tool_calls) or None (no/malformed usage).

    Fast path for the common case of plain int counts; anything else (floats, tool calls, junk)
    goes through ``Usage.from_attributes`` so the rules stay in one place.
    """
    get = attributes.get
    inp = get(_IN)
    out = get(_OUT)
    if inp is None and out is None:
        return None
    read = get(_READ, 0)
    write = get(_WRITE)
    if write is None:
        write = get(_CREATION, 0)
    write_1h = get(_WRITE_1H, 0)
    reasoning = get(_REASONING, 0)
    if inp is None:
        inp = 0
    if out is None:
        out = 0
    if (
        inp.__class__ is int
        and out.__class__ is int
        and read.__class__ is int
        and write.__class__ is int
        and write_1h.__class__ is int
        and reasoning.__class__ is int
        and _TOOLS not in attributes
    ):
        if (
            read >= 0
            and write_1h >= 0
            and reasoning >= 0
            and read + write <= inp
            and 0 <= write_1h <= write
            and 0 <= reasoning <= out
        ):
            return inp, read, write, write_1h, out, _NO_TOOLS
        return None
    try:
        usage = Usage.from_attributes(attributes)
    except Exception:  # InvalidUsage or anything odd in a foreign span
        return None
    if usage is None:
        return None
    return (
        usage.input_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.cache_write_1h_tokens,
        usage.output_tokens,
        usage.tool_calls,
    )


_NO_TOOLS: dict[str, int] = {}
_COST_STATUS = attr.TOKENTRAIL_COST_STATUS
_PROVIDER = attr.GEN_AI_PROVIDER_NAME
_SYSTEM = attr.GEN_AI_SYSTEM
_RESPONSE_MODEL = attr.GEN_AI_RESPONSE_MODEL
_REQUEST_MODEL = attr.GEN_AI_REQUEST_MODEL
_SERVICE_TIER = attr.TOKENTRAIL_SERVICE_TIER
_IN = attr.GEN_AI_USAGE_INPUT_TOKENS
_OUT = attr.GEN_AI_USAGE_OUTPUT_TOKENS
_READ = attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
_WRITE = attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS
_CREATION = attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
_WRITE_1H = attr.TOKENTRAIL_USAGE_CACHE_WRITE_1H_INPUT_TOKENS
_REASONING = attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
_TOOLS = attr.TOKENTRAIL_USAGE_TOOL_CALLS
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
