"""The rate card: genai-prices data + bundled overlay + user overlay, resolved and memoised.

Resolution (provider, model name, service tier) -> ``Resolved`` is done once per key; a
``Resolved`` holds the price periods of that model (split at every effective date the data and
overlays know), each turned lazily into integer ``Rates`` so pricing a call is a few integer
multiplications.

Units: prices are kept in femto-USD (1e-15 USD) per token, so $0.075 per million tokens is
75_000_000 and every component is an exact integer until it is rounded to nano-USD.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Callable

import genai_prices
from genai_prices import data as genai_data
from genai_prices import types as gp

from tokentrail.processor.pricing import overlay as ov
from tokentrail.processor.pricing.providers import normalize_provider, price_table_id

logger = logging.getLogger("tokentrail.pricing")

ENV_RATE_CARD = "TOKENTRAIL_RATE_CARD"

FEMTO_PER_NANO = 1_000_000
_FEMTO_PER_USD_PER_MTOK = Decimal(10) ** 9  # $1 per million tokens = 1e9 femto-USD per token
_FEMTO_PER_USD = Decimal(10) ** 15

STANDARD, BATCH, FLEX, PRIORITY = "standard", "batch", "flex", "priority"
_SERVICE_TIERS = {
    None: STANDARD,
    "": STANDARD,
    "standard": STANDARD,
    "default": STANDARD,
    "auto": STANDARD,
    "on_demand": STANDARD,
    "standard_only": STANDARD,
    "scale": STANDARD,
    "batch": BATCH,
    "flex": FLEX,
    "priority": PRIORITY,
    "fast": PRIORITY,
}

# genai-prices price contexts for each service tier, first active one wins. Flex is billed at the
# Batch rates where the data has no flex price of its own (OpenAI's documented rule).
_VARIANT_CONTEXTS = {
    BATCH: ({"processing": "batch"},),
    FLEX: ({"service_tier": "flex"}, {"processing": "batch"}),
    PRIORITY: ({"service_tier": "priority"},),
}
# Discount applied to token prices when the data has no price for the tier: batch APIs are 50% off
# everywhere; flex is OpenAI's (billed at its Batch rates). Elsewhere an unknown flex or priority
# price is charged at standard, and the tier attribute says "standard".
_TIER_FALLBACK_FACTOR = {BATCH: Decimal("0.5"), FLEX: Decimal("0.5")}
_FLEX_AT_BATCH_RATES = frozenset({"openai", "azure"})

# genai-prices per-call price keys (USD per 1000 calls) -> our tool names.
_FEE_KEYS = {
    "web_searches_kcount": ("web_search",),
    "storage_searches_kcount": ("file_search", "storage_search"),
    "code_executions_kcount": ("code_execution", "code_interpreter"),
    "social_searches_kcount": ("social_search",),
}
REQUEST_FEE = "request"

# Providers that resell another vendor's models at that vendor's list price when their own table
# lacks the model (Bedrock's Claude ids follow Anthropic's prices).
_VENDOR_FALLBACK = {"aws": (("claude", "anthropic"),)}

_BEDROCK_ID = re.compile(
    r"^(?:[a-z]{2,4}(?:-[a-z]+)?\.)?"  # us. eu. apac. au. jp. ca. us-gov. global.
    r"(?:anthropic|meta|amazon|mistral|cohere|ai21|deepseek|openai|qwen|writer|google|moonshotai|nvidia)\."
    r"(?P<model>.+?)(?:-v\d+(?::\d+)?)?(?::\d+)?$"
)
_DATE_SUFFIX = re.compile(r"(?:[-@]20\d{2}-?\d{2}-?\d{2})$")
_MAX_MEMO = 4096
_CLAUDE_HOSTS = frozenset({"anthropic", "aws", "google", None})
_DEFAULT_TABLES = ("openai", "anthropic", "google", "mistral", "deepseek", "x-ai", "cohere", "aws")


Flat = tuple  # (input, cache_read, cache_write_5m, cache_write_1h, output) femto-USD per token


@dataclass(frozen=True, slots=True)
class Rates:
    """Integer prices of one model, one service tier, one price period."""

    base: Flat
    base_label: str
    tiers: tuple  # ((above_input_tokens, Flat, label), ...) highest threshold first
    fees: dict  # tool name -> femto-USD per call; REQUEST_FEE charged once per call
    sources: tuple


class Resolved:
    """A model resolved on the rate card: its price periods, built on first use."""

    __slots__ = ("pricing_model", "boundaries", "periods", "build", "per_call", "fixed")

    def __init__(self, pricing_model: str, boundaries: list[int], build: Callable[[int], Rates | None], per_call: bool):
        self.pricing_model = pricing_model
        self.boundaries = boundaries
        self.periods: list[Any] = [UNBUILT] * (len(boundaries) + 1)
        self.build = build
        self.per_call = per_call  # time-of-day prices (off-peak): cannot be cached per period
        # The one price of a model whose price never changed: the hot path skips the period search.
        self.fixed: Any = UNBUILT

    def rates_at(self, ts_ns: int) -> Rates | None:
        i = bisect.bisect_right(self.boundaries, ts_ns)
        if self.per_call:
            # Off-peak windows start and end on whole minutes: one build per (period, minute of day).
            period = self.periods[i]
            if period is UNBUILT:
                period = self.periods[i] = {}
            minute = int(ts_ns // 60_000_000_000) % 1440
            try:
                return period[minute]
            except KeyError:
                rates = period[minute] = self.build(ts_ns)
                return rates
        rates = self.periods[i]
        if rates is UNBUILT:
            rates = self.periods[i] = self.build(ts_ns)
            if not self.boundaries:
                self.fixed = rates
        return rates


UNBUILT = object()


class RateCard:
    def __init__(self) -> None:
        # The data bundled with the installed genai-prices, never a snapshot an app may have fetched with
        # genai_prices.UpdatePrices: the rate-card version must identify the prices used.
        self.providers: list[gp.Provider] = genai_data.providers
        self.by_id = {p.id: p for p in self.providers}
        self.overlay = ov.load(ov.BUNDLED_PATH, origin="overlay", require_source=True)
        version = f"genai-prices-{genai_prices.__version__}+ov.{self.overlay.digest}"
        self.user_path: str | None = os.environ.get(ENV_RATE_CARD) or None
        self.user_error: str | None = None
        if self.user_path:
            try:
                user = ov.load(Path(self.user_path), origin="user", require_source=False)
            except (OSError, ov.OverlayError) as exc:
                # A broken user card must not break the app: price from the public data, say so.
                self.user_error = str(exc)
                logger.error("ignoring %s=%s: %s", ENV_RATE_CARD, self.user_path, exc)
                version += "+user.invalid"
            else:
                self.overlay.extend(user)
                version += f"+user.{user.digest}"
        self.version = version
        self.memo: dict[tuple, Resolved | None] = {}
        # (provider, model, raw service tier) as found on spans -> Resolved: one dict hit when warm.
        self.hot: dict[tuple, Resolved | None] = {}
        self.warned: set[tuple] = set()
        self.lock = threading.Lock()

    # -- resolution -------------------------------------------------------------------------

    def lookup(self, provider: Any, model: Any, service_tier: Any) -> Resolved | None:
        """``resolve`` keyed on the raw span values (service tier not yet normalised)."""
        key = (provider, model, service_tier)
        try:
            return self.hot[key]
        except KeyError:
            pass
        except TypeError:  # unhashable junk in attributes
            return None
        resolved = self.resolve(provider, model, normalize_service_tier(service_tier))
        if len(self.hot) >= _MAX_MEMO:
            self.hot.clear()
        self.hot[key] = resolved
        return resolved

    def resolve(self, provider: Any, model: Any, service_tier: str) -> Resolved | None:
        key = (provider, model, service_tier)
        try:
            return self.memo[key]
        except KeyError:
            pass
        except TypeError:  # unhashable junk in attributes
            return None
        resolved = self._resolve(provider, model, service_tier)
        if len(self.memo) >= _MAX_MEMO:
            self.memo.clear()
        self.memo[key] = resolved
        return resolved

    def _resolve(self, provider: Any, model: Any, service_tier: str) -> Resolved | None:
        if not isinstance(model, str) or not model.strip():
            return None
        pname = normalize_provider(provider)
        found = self.find_model(pname, model)
        if found is None:
            with self.lock:
                if (pname, model) not in self.warned:
                    self.warned.add((pname, model))
                    logger.warning(
                        "no price for model %r (provider %r): its calls are marked unpriced; add it to %s",
                        model,
                        pname,
                        ENV_RATE_CARD,
                    )
            return None
        pricing_model, owner, gm, from_fallback, entries, keys = found
        discounts = [
            d
            for d in self.overlay.discounts
            if ov.provider_matches(d.provider, keys)
            and ov.model_glob_matches(d.model, gm.id if gm else None, pricing_model, model.strip().lower())
        ]
        boundaries: set[int] = set()
        per_call = False
        if gm is not None:
            conditions = [c.constraint for c in gm.prices] if isinstance(gm.prices, list) else []
            if service_tier != STANDARD:  # variant dates only matter to the tiers they price
                conditions += [v.constraint for v in gm.price_variants or ()]
            for c in conditions:
                if isinstance(c, gp.StartDateConstraint):
                    boundaries.add(ov.date_ns(c.start_date))
                elif isinstance(c, gp.TimeOfDateConstraint):
                    per_call = True
        for item in (*entries, *discounts):
            boundaries.update(item.window.boundaries())

        def build(ts_ns: int) -> Rates | None:
            return self._build(ts_ns, owner, gm, from_fallback, entries, discounts, service_tier)

        return Resolved(pricing_model, sorted(boundaries), build, per_call)

    def find_model(self, pname: str | None, model: str):
        """(pricing_model, owner, genai model, from_fallback, overlay entries, provider keys) or None."""
        name = model.strip().lower()
        table = price_table_id(pname) or (pname if pname in self.by_id else None)
        any_provider = pname is None  # no provider known (e.g. `tokentrail price m`): every entry may apply
        for alias in reversed(self.overlay.aliases):  # user aliases come last: they win
            if alias.name == name and (any_provider or ov.provider_matches(alias.provider, (table, pname))):
                name = alias.model
                if alias.to_provider:
                    pname = alias.to_provider
                    table = price_table_id(pname) or (pname if pname in self.by_id else None)
                break
        any_provider = pname is None
        keys = (table, pname)
        candidates = _candidates(name)
        tables: list[str | None]
        if table is not None:
            tables = [table]
        elif pname is None:
            # The vendor whose naming the model follows, then the vendors' own tables in a fixed order
            # (hosts such as Groq or OpenRouter price the same open model differently: never guessed).
            tables = [None, *(t for t in _DEFAULT_TABLES if t in self.by_id)]
        else:
            tables = []  # a provider genai-prices does not know: only the overlays can price it
        for tbl in tables:
            for cand in candidates:
                hit = self._lookup(tbl, cand, keys, any_provider)
                if hit:
                    return hit
        # Overlay-only models of an unknown provider (self-hosted, private).
        for cand in candidates:
            entries = [
                e
                for e in self.overlay.models
                if (any_provider or ov.provider_matches(e.provider, keys)) and e.matches_name(cand)
            ]
            if entries:
                return (_qualified(entries[-1].provider or pname, entries[-1].model), None, None, False, entries, keys)
        for needle, vendor in _VENDOR_FALLBACK.get(table or "", ()):
            if needle in name:
                for cand in candidates:
                    hit = self._lookup(vendor, cand, (*keys, vendor), False)
                    if hit:
                        return hit
        return None

    def _lookup(self, table: str | None, cand: str, keys: tuple, any_provider: bool):
        gm = owner = None
        from_fallback = False
        if table is None:
            provider = next(
                (p for p in self.providers if p.model_match is not None and p.model_match.is_match(cand)), None
            )
        else:
            provider = self.by_id.get(table)
        if provider is not None:
            gm = provider.find_model(cand, all_providers=self.providers)
            if gm is not None:
                owner = provider.id
                if not any(gm is m for m in provider.models):
                    from_fallback = True
                    owner = next((p.id for p in self.providers if any(gm is m for m in p.models)), provider.id)
        all_keys = (*keys, owner, provider.id if provider is not None else None)
        names = (cand,) if gm is None else (cand, gm.id)
        entries = [
            e
            for e in self.overlay.models
            if (any_provider and table is None and gm is None or ov.provider_matches(e.provider, all_keys))
            and any(e.matches_name(n) for n in names)
        ]
        if gm is None and not entries:
            return None
        if gm is not None:
            pricing_model = _qualified(owner, gm.id)
        else:
            pricing_model = _qualified(entries[-1].provider or table, entries[-1].model)
        return pricing_model, owner, gm, from_fallback, entries, all_keys

    # -- prices for one period -------------------------------------------------------------

    def _build(self, ts_ns, owner, gm, from_fallback, entries, discounts, service_tier) -> Rates | None:
        when = _dt.datetime.fromtimestamp(ts_ns / 1e9, tz=_dt.timezone.utc)
        active = [e for e in entries if e.window.contains(ts_ns)]
        overrides_base = any(e.prices for e in active)
        # level -1 is the base price; other levels are "above N input tokens" tiers.
        levels: dict[str, dict[int, Decimal]] = {}
        fees: dict[str, Decimal] = {}
        sources: list[str] = []
        priced_tier, factor = STANDARD, Decimal(1)
        if gm is not None:
            context = None
            if service_tier != STANDARD:
                # Variant prices are only trusted for the provider's own listing and when no overlay
                # replaced the base prices they were derived from.
                if not from_fallback and not overrides_base:
                    context = _active_context(gm, when, service_tier)
                if context is not None:
                    priced_tier = service_tier
                elif service_tier == BATCH or (service_tier == FLEX and owner in _FLEX_AT_BATCH_RATES):
                    priced_tier, factor = service_tier, _TIER_FALLBACK_FACTOR[service_tier]
            model_price = gm.get_prices(when, context)
            for key, value in model_price.__dict__.items():
                if key.startswith("_") or value is None:
                    continue
                if isinstance(value, gp.TieredPrices):
                    levels[key] = {-1: value.base, **{t.start: t.price for t in value.tiers}}
                else:
                    levels[key] = {-1: value}
            sources.append(f"genai-prices:{owner}/{gm.id}")
        elif service_tier == BATCH:
            priced_tier, factor = service_tier, _TIER_FALLBACK_FACTOR[service_tier]
        for entry in active:
            for key, value in entry.prices.items():
                levels[key] = {-1: value}
            for above, prices in entry.tiers:
                for key, value in prices.items():
                    levels.setdefault(key, {})[above] = value
            fees.update(entry.fees)
            sources.append(f"{entry.origin}:{entry.model}" + (f" ({entry.source})" if entry.source else ""))
        if not any(k in levels for k in ("input_mtok", "output_mtok", "input_text_mtok", "output_text_mtok")):
            if gm is None or levels or fees:
                # Priced only in units we do not measure (audio hours, characters), or an overlay-only
                # model outside its effective dates: cannot price honestly.
                return None
            # genai-prices lists the model with no charge at all (":free" models, moderation): $0 is the price.
            sources.append("listed without charge")
        discount = Decimal(1)
        for d in discounts:
            if d.window.contains(ts_ns):
                discount = (Decimal(100) - d.percent) / Decimal(100)
                sources.append(f"discount:{d.percent}%" + (f" ({d.source})" if d.source else ""))
        if priced_tier == STANDARD and service_tier != STANDARD:
            what = gm.id if gm else owner
            _warn_once(self, (service_tier, owner, what), "no %s price for %s: priced at standard", service_tier, what)
        # Anthropic's multipliers hold on Anthropic, Bedrock and Vertex; resellers set their own.
        claude = owner in _CLAUDE_HOSTS and "claude" in ((gm.id if gm else "") + " ".join(e.model for e in entries))
        token_factor = factor * discount * _FEMTO_PER_USD_PER_MTOK
        thresholds = sorted({t for per_key in levels.values() for t in per_key if t >= 0})
        flats = [_flat(levels, level, claude, token_factor) for level in (-1, *thresholds)]
        fee_femto = {}
        if gm is not None:
            base_fees = {k: v[-1] for k, v in levels.items() if -1 in v}
            for key, tools in _FEE_KEYS.items():
                if key in base_fees:
                    for tool in tools:
                        fee_femto[tool] = base_fees[key] / 1000
            if "requests_kcount" in base_fees:
                fee_femto[REQUEST_FEE] = base_fees["requests_kcount"] / 1000
        fee_femto.update(fees)
        fee_femto = {k: _to_int(v * discount * _FEMTO_PER_USD) for k, v in fee_femto.items()}
        label = priced_tier
        tiers = tuple(
            (t, flats[i + 1], f"{label},context>{_short(t)}") for i, t in reversed(list(enumerate(thresholds)))
        )
        return Rates(flats[0], label, tiers, fee_femto, tuple(sources))

    # -- helpers for the CLI -----------------------------------------------------------------

    def known_names(self, provider: str | None = None) -> list[str]:
        table = price_table_id(normalize_provider(provider)) if provider else None
        names: set[str] = set()
        for p in self.providers:
            if table is None or p.id == table or p.id in (self.by_id[table].fallback_model_providers or ()):
                names.update(m.id for m in p.models)
        for e in self.overlay.models:
            names.update(n for n in e.names if "*" not in n)
        names.update(a.name for a in self.overlay.aliases)
        return sorted(names)


def _active_context(gm: gp.ModelInfo, when: _dt.datetime, service_tier: str):
    for context in _VARIANT_CONTEXTS.get(service_tier, ()):
        for variant in gm.price_variants or ():
            if variant.when == context and (variant.constraint is None or variant.constraint.active(when)):
                return context
    return None


def _price_at(per_key: dict[int, Decimal] | None, level: int) -> Decimal | None:
    if not per_key:
        return None
    best = None
    for start in sorted(per_key):
        if start <= level:
            best = per_key[start]
    return best


def _flat(levels: dict, level: int, claude: bool, factor: Decimal) -> Flat:
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
    # Absent cache prices: Anthropic's published multipliers for Claude; elsewhere the cached
    # tokens are billed as plain input (what genai-prices does when a model lists no cache price).
    read = at("cache_read_mtok", "cache_text_read_mtok")
    if read is None:
        read = inp * Decimal("0.1") if claude else inp
    write5 = at("cache_write_5m_mtok", "cache_write_mtok", "cache_text_write_mtok")
    if write5 is None:
        write5 = inp * Decimal("1.25") if claude else inp
    write1h = at("cache_write_1h_mtok")
    if write1h is None:
        write1h = inp * 2 if claude else write5
    return tuple(_to_int(p * factor) for p in (inp, read, write5, write1h, out))


def _to_int(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


def _short(tokens: int) -> str:
    if tokens % 1_000_000 == 0:
        return f"{tokens // 1_000_000}m"
    if tokens % 1000 == 0:
        return f"{tokens // 1000}k"
    return str(tokens)


def _qualified(provider: str | None, model: str) -> str:
    return f"{provider}/{model}" if provider else model


def _candidates(name: str) -> list[str]:
    """The name, then progressively normalised forms of it (provider prefixes, snapshot dates)."""
    out = [name]
    base = name.rsplit("/", 1)[-1] if ("/" in name and not name.startswith("accounts/")) else name
    out.append(base)  # models/gemini-2.5-pro, publishers/google/models/x, openrouter vendor/x, ARNs
    m = _BEDROCK_ID.match(base)
    if m:
        out.append(m.group("model"))
    for cand in list(out):
        stripped = _DATE_SUFFIX.sub("", cand)
        if stripped != cand:
            out.append(stripped)
    return list(dict.fromkeys(c for c in out if c))


def _warn_once(card: RateCard, key: tuple, message: str, *args: Any) -> None:
    with card.lock:
        if key in card.warned:
            return
        card.warned.add(key)
    logger.warning(message, *args)


_card: RateCard | None = None
_card_lock = threading.Lock()


def card() -> RateCard:
    global _card
    current = _card
    if current is None:
        with _card_lock:
            if _card is None:
                _card = RateCard()
            current = _card
    return current


def reload() -> RateCard:
    """Re-read the overlays (and ``TOKENTRAIL_RATE_CARD``) and drop every memoised resolution."""
    global _card
    with _card_lock:
        _card = RateCard()
        return _card


def normalize_service_tier(value: Any) -> str:
    try:
        return _SERVICE_TIERS.get(value.lower() if isinstance(value, str) else value, STANDARD)
    except TypeError:
        return STANDARD


def now_ns() -> int:
    return time.time_ns()
