"""Pricing one call: usage x resolved rates -> an exact ``Quote`` in integer nano-USD."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tokentrail.processor.pricing import card as _card
from tokentrail.processor.pricing import overlay as ov
from tokentrail.processor.pricing.rates import FEMTO_PER_NANO, REQUEST_FEE, Flat, Rates
from tokentrail.processor.usage import InvalidUsage, Usage

PRICED, UNPRICED, NO_USAGE = "priced", "unpriced", "no_usage"
_HALF_NANO = FEMTO_PER_NANO // 2
_NANO = Decimal(10) ** -9
_PRICE_NAMES = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output", "reasoning")


@dataclass(slots=True)
class Cost:
    """One call at its rates: each component in nano-USD, and the rates row applied."""

    flat: Flat  # the rates row applied (after any long-context tier)
    tier: str  # e.g. "standard", "batch", "standard,context>200k"
    input: int
    cache_read: int
    cache_write: int
    output: int
    fees: int

    @property
    def total(self) -> int:
        return self.input + self.cache_read + self.cache_write + self.output + self.fees

    def cache_savings(self, cache_read_tokens: int) -> int:
        """What the cache reads would have cost as fresh input, minus what they cost (nano-USD)."""
        return (cache_read_tokens * self.flat[0] + _HALF_NANO) // FEMTO_PER_NANO - self.cache_read


def cost_of(rates: Rates, usage: Usage) -> Cost:
    """``usage`` at ``rates``: integer femto-USD products, each component rounded half up to nano-USD."""
    input_tokens = usage.input_tokens
    flat, label = rates.base, rates.base_label
    for above, tier_flat, tier_label in rates.tiers:
        if input_tokens > above:
            flat, label = tier_flat, tier_label
            break
    h = _HALF_NANO
    d = FEMTO_PER_NANO
    read = usage.cache_read_tokens
    write = usage.cache_write_tokens
    write_1h = usage.cache_write_1h_tokens
    output = usage.output_tokens
    if flat[5] == flat[4]:
        output_femto = output * flat[4]
    else:
        reasoning = min(usage.reasoning_tokens, output)
        output_femto = (output - reasoning) * flat[4] + reasoning * flat[5]
    fees = 0
    per_call = rates.fees
    tool_calls = usage.tool_calls
    if per_call and (tool_calls or REQUEST_FEE in per_call):
        femto = per_call.get(REQUEST_FEE, 0)
        for tool, count in tool_calls.items():
            femto += count * per_call.get(tool, 0)
        fees = (femto + h) // d
    return Cost(
        flat,
        label,
        ((input_tokens - read - write) * flat[0] + h) // d,
        (read * flat[1] + h) // d,
        ((write - write_1h) * flat[2] + write_1h * flat[3] + h) // d,
        (output_femto + h) // d,
        fees,
    )


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
    resolved = card.lookup(provider, model, service_tier)
    rates = resolved.rates_at(_as_ns(at)) if resolved is not None else None
    if rates is None:
        pricing_model = resolved.pricing_model if resolved is not None else None
        return Quote(UNPRICED, None, None, pricing_model, None, card.version, provider, model)
    cost = cost_of(rates, usage)
    components = {"input": cost.input, "cache_read": cost.cache_read, "cache_write": cost.cache_write,
                  "output": cost.output, "fees": cost.fees}
    return Quote(PRICED, cost.total, components, resolved.pricing_model, cost.tier, card.version, provider, model,
                 rates, cost.flat)


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
        return ov.date_ns(at)
    raise TypeError(f"at must be epoch nanoseconds, a datetime or a date, not {type(at).__name__}")
