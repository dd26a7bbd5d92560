"""Pricing one call: usage x resolved rates -> an exact ``Quote`` in integer nano-USD."""

from __future__ import annotations

import datetime as _dt
from decimal import Decimal
from typing import Any

from tokentrail.processor.pricing import card as _card
from tokentrail.processor.usage import InvalidUsage, Usage

PRICED, UNPRICED, NO_USAGE = "priced", "unpriced", "no_usage"
COMPONENTS = ("input", "cache_read", "cache_write", "output", "fees")
_FEMTO_PER_NANO = _card.FEMTO_PER_NANO
_HALF_NANO = _FEMTO_PER_NANO // 2
_REQUEST_FEE = _card.REQUEST_FEE
_UNBUILT = _card.UNBUILT
_NANO = Decimal(10) ** -9
_PRICE_NAMES = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")


class Quote:
    """The price of one call. Amounts are exact integers of nano-USD (1e-9 USD); None when unpriced."""

    __slots__ = (
        "status",
        "total_nano_usd",
        "components",
        "pricing_model",
        "tier",
        "rate_card_version",
        "provider",
        "model",
        "_rates",
        "_flat",
    )

    def __init__(self, status, total_nano_usd, components, pricing_model, tier, rate_card_version, provider, model,
                 rates=None, flat=None):
        self.status: str = status
        self.total_nano_usd: int | None = total_nano_usd
        self.components: dict[str, int] | None = components
        self.pricing_model: str | None = pricing_model
        self.tier: str | None = tier
        self.rate_card_version: str = rate_card_version
        self.provider: str | None = provider
        self.model: Any = model
        self._rates = rates
        self._flat = flat

    @property
    def priced(self) -> bool:
        return self.status == PRICED

    @property
    def total_usd(self) -> Decimal | None:
        return None if self.total_nano_usd is None else Decimal(self.total_nano_usd) * _NANO

    @property
    def unit_prices(self) -> dict[str, Decimal]:
        """The rates applied, USD per million tokens (after tier, batch and discount)."""
        if self._flat is None:
            return {}
        return {name: Decimal(v) / 10**9 for name, v in zip(_PRICE_NAMES, self._flat)}

    @property
    def fees_per_call(self) -> dict[str, Decimal]:
        """Per-call fees (USD) the rate card knows for this model."""
        if self._rates is None:
            return {}
        return {k: Decimal(v) / 10**15 for k, v in self._rates.fees.items()}

    @property
    def sources(self) -> tuple[str, ...]:
        """Where the prices came from: genai-prices entry, overlay entries (with source notes), discounts."""
        return () if self._rates is None else self._rates.sources

    def __repr__(self) -> str:
        return (
            f"Quote(status={self.status!r}, total_usd={self.total_usd}, components={self.components}, "
            f"pricing_model={self.pricing_model!r}, tier={self.tier!r}, rate_card_version={self.rate_card_version!r})"
        )


def quote(model: Any, usage: Usage, *, provider: Any = None, at: Any = None, service_tier: Any = None) -> Quote:
    """Price ``usage`` of one call to ``model`` at the price in force at ``at``.

    ``at``: epoch nanoseconds, a datetime (naive = UTC) or None (now). ``service_tier``: standard,
    batch, flex or priority (provider spellings such as ``default`` or ``auto`` mean standard).
    Unknown models give ``status='unpriced'`` with no amount (never $0); inconsistent usage
    (more cached than input tokens, negative counts) gives ``status='no_usage'``.
    """
    card = _card.card()
    try:
        usage.validate()
    except (InvalidUsage, AttributeError, TypeError):
        return Quote(NO_USAGE, None, None, None, None, card.version, provider, model)
    priced = price_counts(
        card,
        provider,
        model,
        service_tier,
        _as_ns(at),
        usage.input_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.cache_write_1h_tokens,
        usage.output_tokens,
        usage.tool_calls,
    )
    if priced.__class__ is not tuple:
        pricing_model = priced.pricing_model if priced is not None else None
        return Quote(UNPRICED, None, None, pricing_model, None, card.version, provider, model)
    resolved, rates, flat, label, c_input, c_read, c_write, c_output, c_fees = priced
    components = {"input": c_input, "cache_read": c_read, "cache_write": c_write, "output": c_output, "fees": c_fees}
    total = c_input + c_read + c_write + c_output + c_fees
    return Quote(PRICED, total, components, resolved.pricing_model, label, card.version, provider, model, rates, flat)


def price_counts(card, provider, model, service_tier, ts_ns, input_tokens, cache_read, cache_write, write_1h,
                 output_tokens, tool_calls):
    """The hot path shared by ``quote`` and ``price_span``, on plain validated counts.

    Returns (resolved, rates, flat, tier label, input, cache_read, cache_write, output, fees) in
    nano-USD, or the ``Resolved`` (None if the model is unknown) when there is no price at ``ts_ns``.
    """
    resolved = card.lookup(provider, model, service_tier)
    if resolved is None:
        return None
    rates = resolved.fixed
    if rates is _UNBUILT:
        rates = resolved.rates_at(ts_ns)
    if rates is None:
        return resolved
    flat, label = rates.base, rates.base_label
    if rates.tiers:
        for above, tier_flat, tier_label in rates.tiers:
            if input_tokens > above:
                flat, label = tier_flat, tier_label
                break
    h = _HALF_NANO
    d = _FEMTO_PER_NANO
    c_fees = 0
    fees = rates.fees
    if fees and (tool_calls or _REQUEST_FEE in fees):
        femto = fees.get(_REQUEST_FEE, 0)
        for tool, count in tool_calls.items():
            femto += count * fees.get(tool, 0)
        c_fees = (femto + h) // d
    return (
        resolved,
        rates,
        flat,
        label,
        ((input_tokens - cache_read - cache_write) * flat[0] + h) // d,
        (cache_read * flat[1] + h) // d,
        ((cache_write - write_1h) * flat[2] + write_1h * flat[3] + h) // d,
        (output_tokens * flat[4] + h) // d,
        c_fees,
    )


def _as_ns(at: Any) -> int:
    if at is None:
        return _card.now_ns()
    if isinstance(at, int) and not isinstance(at, bool):
        return at
    if isinstance(at, _dt.datetime):
        if at.tzinfo is None:
            at = at.replace(tzinfo=_dt.timezone.utc)
        return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000
    if isinstance(at, _dt.date):
        return _card.ov.date_ns(at)
    raise TypeError(f"at must be epoch nanoseconds, a datetime or a date, not {type(at).__name__}")
