"""Vendor billing rules (``billing_rules.yaml``), loaded and validated once per rate card."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Mapping

from tokentrail.processor.pricing import overlay as ov

BUNDLED_PATH = Path(__file__).with_name("billing_rules.yaml")

STANDARD, BATCH, FLEX, PRIORITY = "standard", "batch", "flex", "priority"
TIERS = frozenset({STANDARD, BATCH, FLEX, PRIORITY})


class RulesError(ValueError):
    """The billing rules file is not in its documented shape."""


@dataclass(frozen=True)
class TierRule:
    """How one service tier is priced."""

    tier: str
    price_variants: tuple[Mapping[str, str], ...]  # genai-prices price contexts, first active wins
    fallback_variants: tuple[Mapping[str, str], ...]  # another tier's contexts that price it, for fallback_providers
    fallback_factor: Decimal | None  # on the standard token prices when the data has no variant
    fallback_providers: frozenset[str] | None  # None: every provider
    source: str

    def falls_back_for(self, owner: str | None) -> bool:
        """Whether ``owner`` bills this tier like another one when the data has no price of its own."""
        return self.fallback_providers is None or owner in self.fallback_providers

    def fallback_for(self, owner: str | None) -> Decimal | None:
        """The factor on standard prices for a model of ``owner`` with no price of this tier."""
        if self.fallback_factor is None or not self.falls_back_for(owner):
            return None
        return self.fallback_factor


@dataclass(frozen=True)
class CacheRule:
    """Cache prices as multiples of the input price, for models the data lists without them."""

    models_containing: str
    providers: frozenset[str | None]
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    source: str


@dataclass(frozen=True)
class Reseller:
    """A provider billing another vendor's models at the vendor's list price."""

    provider: str
    models_containing: str
    list_price_of: str
    source: str


@dataclass(frozen=True)
class BillingRules:
    tier_aliases: Mapping[str, str]
    tiers: Mapping[str, TierRule]
    cache: tuple[CacheRule, ...]
    resellers: tuple[Reseller, ...]
    digest: str = ""

    def service_tier(self, value: Any) -> str:
        """standard, batch, flex or priority for a provider's spelling (anything else: standard)."""
        if not isinstance(value, str):
            return STANDARD
        name = value.lower()
        if name in TIERS:
            return name
        return self.tier_aliases.get(name, STANDARD)

    def cache_rule(self, owner: str | None, model_names: Iterable[str]) -> CacheRule | None:
        for rule in self.cache:
            if owner in rule.providers and any(rule.models_containing in n for n in model_names):
                return rule
        return None

    def list_price_vendors(self, provider: str | None, model: str) -> tuple[str, ...]:
        """The vendors whose list price ``provider`` bills ``model`` at, when its table lacks it."""
        return tuple(r.list_price_of for r in self.resellers if r.provider == provider and r.models_containing in model)


def load(path: Path = BUNDLED_PATH) -> BillingRules:
    data, digest = ov.read_yaml(path, RulesError)
    return dataclasses.replace(parse(data, where=str(path)), digest=digest)


def parse(data: Any, *, where: str = "billing rules") -> BillingRules:
    _keys(data, where, required={"version"},
          optional={"service_tier_aliases", "service_tiers", "cache_prices", "resellers"})
    raw_aliases = data.get("service_tier_aliases")
    aliases = _tier_aliases(raw_aliases, where) if raw_aliases is not None else {}
    tiers: dict[str, TierRule] = {}
    for i, item in enumerate(data.get("service_tiers") or ()):
        rule = _tier_rule(item, f"{where}: service_tiers[{i}]")
        if rule.tier in tiers:
            raise RulesError(f"{where}: service_tiers: {rule.tier} given twice")
        tiers[rule.tier] = rule
    cache = tuple(_cache_rule(item, f"{where}: cache_prices[{i}]")
                  for i, item in enumerate(data.get("cache_prices") or ()))
    resellers = tuple(_reseller(item, f"{where}: resellers[{i}]") for i, item in enumerate(data.get("resellers") or ()))
    return BillingRules(aliases, tiers, cache, resellers)


def _tier_aliases(item: Any, ctx: str) -> dict[str, str]:
    ctx = f"{ctx}: service_tier_aliases"
    _keys(item, ctx, required={"aliases", "source"})
    aliases = item["aliases"]
    if not isinstance(aliases, Mapping):
        raise RulesError(f"{ctx}.aliases: expected a mapping")
    out = {}
    for name, tier in aliases.items():
        if tier not in TIERS:
            raise RulesError(f"{ctx}.aliases.{name}: {tier!r} is not one of {sorted(TIERS)}")
        out[str(name).lower()] = tier
    return out


def _tier_rule(item: Any, ctx: str) -> TierRule:
    _keys(item, ctx, required={"tier", "price_variants", "source"},
          optional={"fallback_price_variants", "fallback_factor", "fallback_providers"})
    tier = item["tier"]
    if tier not in TIERS - {STANDARD}:
        raise RulesError(f"{ctx}.tier: {tier!r} is not one of batch, flex, priority")
    variants = _variants(item["price_variants"], f"{ctx}.price_variants")
    fallback_variants = _variants(item.get("fallback_price_variants", []), f"{ctx}.fallback_price_variants")
    factor = item.get("fallback_factor")
    if factor is not None:
        factor = _multiplier(factor, f"{ctx}.fallback_factor")
        if not Decimal(0) < factor <= Decimal(1):
            raise RulesError(f"{ctx}.fallback_factor: must be above 0 and at most 1")
    providers = item.get("fallback_providers", "*")
    if factor is None and not fallback_variants and "fallback_providers" in item:
        raise RulesError(f"{ctx}: fallback_providers without a fallback")
    return TierRule(
        tier=tier,
        price_variants=variants,
        fallback_variants=fallback_variants,
        fallback_factor=factor,
        fallback_providers=None if providers == "*" else frozenset(_strings(providers, f"{ctx}.fallback_providers")),
        source=item["source"],
    )


def _variants(variants: Any, ctx: str) -> tuple[dict[str, str], ...]:
    if not isinstance(variants, list) or not all(
        isinstance(v, Mapping) and v and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())
        for v in variants
    ):
        raise RulesError(f"{ctx}: expected a list of string mappings")
    return tuple(dict(v) for v in variants)


def _cache_rule(item: Any, ctx: str) -> CacheRule:
    _keys(item, ctx, required={"models_containing", "providers", "cache_read", "cache_write_5m", "cache_write_1h",
                               "source"})
    providers = item["providers"]
    if not isinstance(providers, list) or not all(p is None or isinstance(p, str) for p in providers):
        raise RulesError(f"{ctx}.providers: expected a list of provider ids (~ for none)")
    return CacheRule(
        models_containing=_name(item["models_containing"], f"{ctx}.models_containing"),
        providers=frozenset(providers),
        cache_read=_multiplier(item["cache_read"], f"{ctx}.cache_read"),
        cache_write_5m=_multiplier(item["cache_write_5m"], f"{ctx}.cache_write_5m"),
        cache_write_1h=_multiplier(item["cache_write_1h"], f"{ctx}.cache_write_1h"),
        source=item["source"],
    )


def _reseller(item: Any, ctx: str) -> Reseller:
    _keys(item, ctx, required={"provider", "models_containing", "list_price_of", "source"})
    return Reseller(
        provider=_name(item["provider"], f"{ctx}.provider"),
        models_containing=_name(item["models_containing"], f"{ctx}.models_containing"),
        list_price_of=_name(item["list_price_of"], f"{ctx}.list_price_of"),
        source=item["source"],
    )


def _keys(item: Any, ctx: str, *, required: set[str], optional: frozenset[str] | set[str] = frozenset()) -> None:
    if not isinstance(item, Mapping):
        raise RulesError(f"{ctx}: expected a mapping, got {type(item).__name__}")
    missing = required - set(item)
    if missing:
        raise RulesError(f"{ctx}: missing {sorted(missing)}")
    unknown = set(item) - required - set(optional)
    if unknown:
        raise RulesError(f"{ctx}: unknown keys {sorted(unknown)}")
    if "source" in required and not (isinstance(item["source"], str) and item["source"].strip()):
        raise RulesError(f"{ctx}: every rule needs a 'source' note")


def _multiplier(value: Any, ctx: str) -> Decimal:
    return ov.non_negative_decimal(value, ctx, RulesError)


def _name(value: Any, ctx: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RulesError(f"{ctx}: expected a non-empty string")
    return value.strip().lower()


def _strings(value: Any, ctx: str) -> list[str]:
    if not isinstance(value, list):
        raise RulesError(f"{ctx}: expected a list or \"*\"")
    return [_name(v, ctx) for v in value]
