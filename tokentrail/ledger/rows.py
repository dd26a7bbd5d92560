"""Turn a finished span into one ledger row (pure: no I/O, never raises for bad attributes)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from opentelemetry.sdk.resources import SERVICE_NAME

from tokentrail.semconv import attributes as attr

from tokentrail.ledger.schema import COLUMNS

_NANO = Decimal(10) ** 9

_TASK_NAME = attr.TOKENTRAIL_TASK_NAME
_TASK_ID = attr.TOKENTRAIL_TASK_ID
_RETRY_ATTEMPT = attr.TOKENTRAIL_RETRY_ATTEMPT
_FALLBACK_FROM = attr.TOKENTRAIL_FALLBACK_FROM

_COMPONENTS = (
    attr.TOKENTRAIL_COST_INPUT,
    attr.TOKENTRAIL_COST_CACHE_READ,
    attr.TOKENTRAIL_COST_CACHE_WRITE,
    attr.TOKENTRAIL_COST_OUTPUT,
    attr.TOKENTRAIL_COST_FEES,
)


def usd_to_nano(value: Any) -> int | None:
    """USD (float, str or Decimal) to integer nano-USD, exactly as written (repr of the float)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else str(value))
        return int((amount * _NANO).to_integral_value())
    except (InvalidOperation, ValueError, TypeError):
        return None


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value))
    except ValueError:
        return None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or None
    return str(value) or None


_PRICING: dict[str, Any] | None = None


def _pricing() -> dict[str, Any]:
    """The pricing module's functions, resolved once (empty if pricing is unavailable)."""
    global _PRICING
    if _PRICING is None:
        try:
            from tokentrail.processor import pricing

            _PRICING = {n: getattr(pricing, n) for n in ("is_llm_span", "price_span") if hasattr(pricing, n)}
        except Exception:
            _PRICING = {}
    return _PRICING


def is_llm_span(attributes: Mapping[str, Any]) -> bool:
    """An LLM call: a GenAI span that reports usage or a cost status, or names a provider and model."""
    pricing_is_llm_span = _pricing().get("is_llm_span")
    if pricing_is_llm_span is not None:
        try:
            return bool(pricing_is_llm_span(attributes))
        except Exception:  # never let a pricing bug lose the span
            pass
    if attr.TOKENTRAIL_COST_STATUS in attributes:
        return True
    has_provider = attr.GEN_AI_PROVIDER_NAME in attributes or attr.GEN_AI_SYSTEM in attributes
    return has_provider and (
        attr.GEN_AI_USAGE_INPUT_TOKENS in attributes or attr.GEN_AI_REQUEST_MODEL in attributes
    )


def _maybe_price(attributes: Mapping[str, Any], start_ns: int | None) -> Mapping[str, Any]:
    """Price an LLM span nobody priced (the ledger used without tokentrail's processors)."""
    if attr.TOKENTRAIL_COST_STATUS in attributes:
        return attributes
    price_span = _pricing().get("price_span")
    if price_span is None:
        return attributes
    try:
        extra = price_span(attributes, start_ns)
    except Exception:
        return attributes
    if not extra:
        return attributes
    merged = dict(attributes)
    merged.update(extra)
    return merged


def total_nano(attributes: Mapping[str, Any]) -> int | None:
    """The exact total: the integer attribute if set, else the sum of the components, else the amount."""
    nano = _int(attributes.get(attr.TOKENTRAIL_COST_NANO_USD))
    if nano is not None:
        return nano
    parts = [usd_to_nano(attributes.get(name)) for name in _COMPONENTS]
    if any(p is not None for p in parts):
        return sum(p for p in parts if p is not None)
    return usd_to_nano(attributes.get(attr.GEN_AI_USAGE_COST_AMOUNT))


def span_to_row(span: Any, *, price_if_missing: bool = True) -> tuple:
    """One ``schema.COLUMNS``-ordered tuple for a ReadableSpan."""
    ctx = span.context
    attributes: Mapping[str, Any] = span.attributes or {}
    parent = span.parent
    resource = getattr(span, "resource", None)
    service = resource.attributes.get(SERVICE_NAME) if resource is not None else None
    status = span.status.status_code.value if span.status is not None else None
    row: dict[str, Any] = {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "name": span.name or "",
        "kind": span.kind.value if span.kind is not None else None,
        "start_ns": span.start_time or 0,
        "end_ns": span.end_time,
        "status": status,
        "service": _str(service),
        "tenant": _str(attributes.get(attr.TOKENTRAIL_TENANT)),
        "feature": _str(attributes.get(attr.TOKENTRAIL_FEATURE)),
        "team": _str(attributes.get(attr.TOKENTRAIL_TEAM)),
        "user_id": _str(attributes.get(attr.USER_ID)),
        "task_name": _str(attributes.get(_TASK_NAME)),
        "task_id": _str(attributes.get(_TASK_ID)),
        "retry_attempt": _int(attributes.get(_RETRY_ATTEMPT)),
        "fallback_from": _str(attributes.get(_FALLBACK_FROM)),
    }
    if is_llm_span(attributes):
        if price_if_missing:
            attributes = _maybe_price(attributes, span.start_time)
        cache_write = attributes.get(attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS)
        if cache_write is None:
            cache_write = attributes.get(attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS)
        status_text = _str(attributes.get(attr.TOKENTRAIL_COST_STATUS))
        priced = status_text in (None, "priced")
        row.update(
            llm=1,
            provider=_str(attributes.get(attr.GEN_AI_PROVIDER_NAME) or attributes.get(attr.GEN_AI_SYSTEM)),
            operation=_str(attributes.get(attr.GEN_AI_OPERATION_NAME)),
            request_model=_str(attributes.get(attr.GEN_AI_REQUEST_MODEL)),
            response_model=_str(attributes.get(attr.GEN_AI_RESPONSE_MODEL)),
            pricing_model=_str(attributes.get(attr.TOKENTRAIL_PRICING_MODEL)),
            error_type=_str(attributes.get(attr.ERROR_TYPE)),
            input_tokens=_int(attributes.get(attr.GEN_AI_USAGE_INPUT_TOKENS)),
            output_tokens=_int(attributes.get(attr.GEN_AI_USAGE_OUTPUT_TOKENS)),
            cache_read_tokens=_int(attributes.get(attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)),
            cache_write_tokens=_int(cache_write),
            cache_write_1h_tokens=_int(attributes.get(attr.TOKENTRAIL_USAGE_CACHE_WRITE_1H_INPUT_TOKENS)),
            reasoning_tokens=_int(attributes.get(attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)),
            cost_status=status_text,
            # unpriced / no_usage calls never get a cost (not even 0): NULL is left out of sums
            cost_nano=total_nano(attributes) if priced else None,
            cost_input_nano=usd_to_nano(attributes.get(attr.TOKENTRAIL_COST_INPUT)),
            cost_cache_read_nano=usd_to_nano(attributes.get(attr.TOKENTRAIL_COST_CACHE_READ)),
            cost_cache_write_nano=usd_to_nano(attributes.get(attr.TOKENTRAIL_COST_CACHE_WRITE)),
            cost_output_nano=usd_to_nano(attributes.get(attr.TOKENTRAIL_COST_OUTPUT)),
            cost_fees_nano=usd_to_nano(attributes.get(attr.TOKENTRAIL_COST_FEES)),
            rate_card_version=_str(attributes.get(attr.TOKENTRAIL_RATE_CARD_VERSION)),
            pricing_tier=_str(attributes.get(attr.TOKENTRAIL_PRICING_TIER)),
        )
    return tuple(row.get(column) for column in COLUMNS)
