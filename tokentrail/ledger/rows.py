"""Turn a finished span into one ledger row (pure: no I/O, never raises for bad attributes)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from opentelemetry.sdk.resources import SERVICE_NAME

from tokentrail.ledger.schema import COLUMNS
from tokentrail.processor.pricing import ensure_priced
from tokentrail.processor.usage import InvalidUsage, Usage, is_genai_call
from tokentrail.semconv import attributes as attr

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
        "provider_project": _str(attributes.get(attr.TOKENTRAIL_PROVIDER_PROJECT)),
        "provider_organization": _str(attributes.get(attr.TOKENTRAIL_PROVIDER_ORGANIZATION)),
        "provider_workspace": _str(attributes.get(attr.TOKENTRAIL_PROVIDER_WORKSPACE)),
        "api_key_hint": _str(attributes.get(attr.TOKENTRAIL_PROVIDER_API_KEY_HINT)),
        "task_outcome": _str(attributes.get(attr.TOKENTRAIL_TASK_OUTCOME)),
    }
    if is_genai_call(attributes):
        if price_if_missing:  # the ledger fed without tokentrail's processors
            attributes = ensure_priced(attributes, span.start_time)[0]
        row.update(_tokens(attributes))
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
            request_max_tokens=_int(attributes.get(attr.GEN_AI_REQUEST_MAX_TOKENS)),
            service_tier=_str(attributes.get(attr.TOKENTRAIL_SERVICE_TIER)),
            unverified=_str(attributes.get(attr.TOKENTRAIL_UNVERIFIED)),
        )
    return tuple(row.get(column) for column in COLUMNS)


def _tokens(attributes: Mapping[str, Any]) -> dict[str, int]:
    """The token columns of a call; none for usage that does not add up (its cost is no_usage)."""
    try:
        usage = Usage.from_attributes(attributes)
    except InvalidUsage:
        usage = None
    if usage is None:
        return {}
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cache_write_1h_tokens": usage.cache_write_1h_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }
