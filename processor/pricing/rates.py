"""Rate lookup: a resolved name + time + service tier -> integer ``Rates``.

A ``Resolved`` model holds its price periods (split at every effective date the data and
overlays know), each built on first use into ``Rates``: femto-USD (1e-15 USD) per token, so
$0.075 per million tokens is 75_000_000 and every component of a call stays an exact integer
until it is rounded to nano-USD.
"""

from __future__ import annotations

import bisect
import datetime as _dt
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Callable, Mapping

from genai_prices import types as gp

from tokentrail.processor.pricing import overlay as ov
from tokentrail.processor.pricing.names import NameMatch
from tokentrail.processor.pricing.rules import STANDARD, BillingRules, CacheRule

FEMTO_PER_NANO = 1_000_000
_FEMTO_PER_USD_PER_MTOK = Decimal(10) ** 9  # $1 per million tokens = 1e9 femto-USD per token
_FEMTO_PER_USD = Decimal(10) ** 15
_ONE = Decimal(1)

# genai-prices per-call price keys (USD per 1000 calls) -> our tool names.
_FEE_KEYS = {
    "web_searches_kcount": ("web_search",),
    "storage_searches_kcount": ("file_search", "storage_search"),
    "code_executions_kcount": ("code_execution", "code_interpreter"),
    "social_searches_kcount": ("social_search",),
}
REQUEST_FEE = "request"
_TOKEN_PRICE_KEYS = ("input_mtok", "output_mtok", "input_text_mtok", "output_text_mtok")

Flat = tuple  # (input, cache_read, cache_write_5m, cache_write_1h, output, reasoning) femto-USD per token
Levels = dict  # price key -> {level: USD per million}; level -1 is the base, others "above N input tokens"
Warn = Callable[..., None]  # warn(key, message, *args): logged once per key


@dataclass(frozen=True, slots=True)
class Rates:
    """Integer prices of one model, one service tier, one price period."""

    base: Flat
    base_label: str
    tiers: tuple  # ((above_input_tokens, Flat, label), ...) highest threshold first
    fees: dict  # tool name -> femto-USD per call; REQUEST_FEE charged once per call
    sources: tuple


class Resolved:
    """A model resolved on the rate card, for one service tier: its price periods, built on first use."""

    __slots__ = ("pricing_model", "boundaries", "periods", "per_call", "fixed", "_build")

    def __init__(self, match: NameMatch, discounts: tuple[ov.Discount, ...], service_tier: str, rules: BillingRules,
                 warn: Warn) -> None:
        self.pricing_model = match.pricing_model
        self.boundaries, self.per_call = _periods(match, discounts, service_tier)
        self.periods: list[Any] = [_UNBUILT] * (len(self.boundaries) + 1)
        # The one price of a model whose price never changed: the hot path skips the period search.
        self.fixed: Any = _UNBUILT

        def build(ts_ns: int) -> Rates | None:
            return build_rates(match, discounts, service_tier, ts_ns, rules, warn)

        self._build = build

    def rates_at(self, ts_ns: int) -> Rates | None:
        rates = self.fixed
        if rates is not _UNBUILT:
            return rates
        i = bisect.bisect_right(self.boundaries, ts_ns)
        if self.per_call:
            # Off-peak windows start and end on whole minutes: one build per (period, minute of day).
            period = self.periods[i]
            if period is _UNBUILT:
                period = self.periods[i] = {}
            minute = int(ts_ns // 60_000_000_000) % 1440
            try:
                return period[minute]
            except KeyError:
                rates = period[minute] = self._build(ts_ns)
                return rates
        rates = self.periods[i]
        if rates is _UNBUILT:
            rates = self.periods[i] = self._build(ts_ns)
            if not self.boundaries:
                self.fixed = rates
        return rates


_UNBUILT = object()
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def _periods(match: NameMatch, discounts: tuple[ov.Discount, ...], service_tier: str) -> tuple[list[int], bool]:
    """(every instant a price of this model changes, whether it changes with the time of day)."""
    boundaries: set[int] = set()
    per_call = False
    gm = match.model
    if gm is not None:
        conditions = [c.constraint for c in gm.prices] if isinstance(gm.prices, list) else []
        if service_tier != STANDARD:  # variant dates only matter to the tiers they price
            conditions += [v.constraint for v in gm.price_variants or ()]
        for c in conditions:
            if isinstance(c, gp.StartDateConstraint):
                boundaries.add(ov.date_ns(c.start_date))
            elif isinstance(c, gp.TimeOfDateConstraint):
                per_call = True
    for item in (*match.entries, *discounts):
        boundaries.update(item.window.boundaries())
    return sorted(boundaries), per_call


def build_rates(match: NameMatch, discounts: tuple[ov.Discount, ...], service_tier: str, ts_ns: int,
                rules: BillingRules, warn: Warn) -> Rates | None:
    """The rates in force at ``ts_ns``; None when the model cannot be priced honestly then."""
    # Integer microseconds: a float of the nanoseconds rounds an instant just before a price change
    # onto it, and the whole earlier period would be built at the new price.
    when = _EPOCH + _dt.timedelta(microseconds=ts_ns // 1000)
    active = tuple(e for e in match.entries if e.window.contains(ts_ns))
    context, tier, factor = _tier_pricing(match, active, service_tier, when, rules)
    levels: Levels = {}
    sources: list[str] = []
    if match.model is not None:
        _add_genai_prices(levels, match.model.get_prices(when, context))
        sources.append(f"genai-prices:{match.owner}/{match.model.id}")
    fees = _add_overlay_prices(levels, active, sources)
    if not any(k in levels for k in _TOKEN_PRICE_KEYS):
        if match.model is None or levels or fees:
            # Priced only in units we do not measure (audio hours, characters), or an
            # overlay-only model outside its effective dates.
            return None
        sources.append("listed without charge")  # ":free" models, moderation: $0 is the price
    discount = _discount(discounts, ts_ns, sources)
    if tier == STANDARD and service_tier != STANDARD:
        what = match.model.id if match.model else match.owner
        warn((service_tier, match.owner, what), "no %s price for %s: priced at standard", service_tier, what)
    cache = rules.cache_rule(match.owner, match.model_names)
    token_factor = factor * discount * _FEMTO_PER_USD_PER_MTOK
    thresholds = sorted({t for per_key in levels.values() for t in per_key if t >= 0})
    flats = [_flat(levels, level, cache, token_factor) for level in (-1, *thresholds)]
    tiers = tuple(
        (t, flats[i + 1], f"{tier},context>{_short(t)}") for i, t in reversed(list(enumerate(thresholds)))
    )
    return Rates(flats[0], tier, tiers, _fees(levels, match.model is not None, fees, discount), tuple(sources))


def _tier_pricing(match: NameMatch, active: tuple[ov.ModelEntry, ...], service_tier: str, when: _dt.datetime,
                  rules: BillingRules) -> tuple[Mapping[str, str] | None, str, Decimal]:
    """(the genai-prices price context, the tier the call is priced at, the factor on its prices)."""
    rule = rules.tiers.get(service_tier)
    if rule is None:  # standard
        return None, STANDARD, _ONE
    gm = match.model
    # Variant prices are only trusted for the provider's own listing and when no overlay
    # replaced the base prices they were derived from.
    if gm is not None and not match.from_fallback and not any(e.prices for e in active):
        contexts = rule.price_variants
        if rule.falls_back_for(match.owner):
            contexts += rule.fallback_variants
        for context in contexts:
            for variant in gm.price_variants or ():
                if variant.when == context and (variant.constraint is None or variant.constraint.active(when)):
                    return context, service_tier, _ONE
    factor = rule.fallback_for(match.owner)
    if factor is not None:
        return None, service_tier, factor
    return None, STANDARD, _ONE


def _add_genai_prices(levels: Levels, model_price: gp.ModelPrice) -> None:
    for key, value in model_price.__dict__.items():
        if key.startswith("_") or value is None:
            continue
        if isinstance(value, gp.TieredPrices):
            levels[key] = {-1: value.base, **{t.start: t.price for t in value.tiers}}
        else:
            levels[key] = {-1: value}


def _add_overlay_prices(levels: Levels, active: tuple[ov.ModelEntry, ...], sources: list[str]) -> dict[str, Decimal]:
    """Overlay entries in force replace the prices they give; returns their per-call fees."""
    fees: dict[str, Decimal] = {}
    for entry in active:
        for key, value in entry.prices.items():
            levels[key] = {-1: value}
        for above, prices in entry.tiers:
            for key, value in prices.items():
                levels.setdefault(key, {})[above] = value
        fees.update(entry.fees)
        sources.append(f"{entry.origin}:{entry.model}" + (f" ({entry.source})" if entry.source else ""))
    return fees


def _discount(discounts: tuple[ov.Discount, ...], ts_ns: int, sources: list[str]) -> Decimal:
    discount = _ONE
    for d in discounts:
        if d.window.contains(ts_ns):
            discount = (Decimal(100) - d.percent) / Decimal(100)
            sources.append(f"discount:{d.percent}%" + (f" ({d.source})" if d.source else ""))
    return discount


def _price_at(per_key: dict[int, Decimal] | None, level: int) -> Decimal | None:
    if not per_key:
        return None
    best = None
    for start in sorted(per_key):
        if start <= level:
            best = per_key[start]
    return best


def _flat(levels: Levels, level: int, cache: CacheRule | None, factor: Decimal) -> Flat:
    def at(*keys: str) -> Decimal | None:
        for key in keys:
            value = _price_at(levels.get(key), level)
            if value is not None:
                return value
        return None

    inp = at("input_mtok", "input_text_mtok")
    out = at("output_mtok", "output_text_mtok")
    inp = inp if inp is not None else Decimal(0)
    out = out if out is not None else Decimal(0)
    # Reasoning tokens are part of the output; a few models bill them at their own rate.
    reasoning = at("output_reasoning_mtok", "output_text_reasoning_mtok")
    reasoning = reasoning if reasoning is not None else out
    # Absent cache prices: the vendor's multipliers (billing rules); otherwise the cached tokens
    # are billed as plain input (what genai-prices does when a model lists no cache price).
    read = at("cache_read_mtok", "cache_text_read_mtok")
    if read is None:
        read = inp * cache.cache_read if cache else inp
    write5 = at("cache_write_5m_mtok", "cache_write_mtok", "cache_text_write_mtok")
    if write5 is None:
        write5 = inp * cache.cache_write_5m if cache else inp
    write1h = at("cache_write_1h_mtok")
    if write1h is None:
        write1h = inp * cache.cache_write_1h if cache else write5
    return tuple(_to_int(p * factor) for p in (inp, read, write5, write1h, out, reasoning))


def _fees(levels: Levels, listed: bool, overlay_fees: dict[str, Decimal], discount: Decimal) -> dict[str, int]:
    """Per-call fees in femto-USD: genai-prices' per-1000-calls prices, then the overlays'."""
    fee_usd: dict[str, Decimal] = {}
    if listed:
        base = {k: v[-1] for k, v in levels.items() if -1 in v}
        for key, tools in _FEE_KEYS.items():
            if key in base:
                for tool in tools:
                    fee_usd[tool] = base[key] / 1000
        if "requests_kcount" in base:
            fee_usd[REQUEST_FEE] = base["requests_kcount"] / 1000
    fee_usd.update(overlay_fees)
    return {k: _to_int(v * discount * _FEMTO_PER_USD) for k, v in fee_usd.items()}


def _to_int(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


def _short(tokens: int) -> str:
    if tokens % 1_000_000 == 0:
        return f"{tokens // 1_000_000}m"
    if tokens % 1000 == 0:
        return f"{tokens // 1000}k"
    return str(tokens)
