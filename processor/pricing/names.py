"""Name resolution: (provider, model name) -> the price-table entry that prices it.

Aliases first (user aliases win); then the provider's genai-prices table (with no provider:
the table of the vendor whose naming the model follows, then the vendors' own tables in a
fixed order) under the name and its normalised forms; then models only the overlays price;
then the vendor whose list price a reseller bills at (billing rules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from genai_prices import types as gp

from tokentrail.processor.pricing import overlay as ov
from tokentrail.processor.pricing.providers import normalize_provider, price_table_id
from tokentrail.processor.pricing.rules import BillingRules
from tokentrail.processor.usage import normalise_model_id

# Tables tried in this order when no provider is known (hosts such as Groq or OpenRouter price
# the same open model differently: never guessed).
_DEFAULT_TABLES = ("openai", "anthropic", "google", "mistral", "deepseek", "x-ai", "cohere", "aws")
_DATE_SUFFIX = re.compile(r"(?:[-@]20\d{2}-?\d{2}-?\d{2})$")


@dataclass(frozen=True, slots=True)
class NameMatch:
    """The price-table entry a model name resolved to."""

    pricing_model: str  # e.g. "anthropic/claude-sonnet-4-5": what the span's tokentrail.pricing.model says
    owner: str | None  # the genai-prices provider id whose table lists the model
    model: gp.ModelInfo | None  # its genai-prices entry; None when only the overlays price it
    from_fallback: bool  # found through another provider's table (genai-prices fallback providers)
    entries: tuple[ov.ModelEntry, ...]  # overlay entries correcting or defining it
    keys: tuple[str | None, ...]  # provider keys the overlay discounts are matched on

    @property
    def model_names(self) -> tuple[str, ...]:
        """Its ids: the genai-prices one and the overlay entries' (for the billing rules)."""
        own = (self.model.id,) if self.model is not None else ()
        return (*own, *(e.model for e in self.entries))


class Names:
    """Resolves names against one rate card's data: genai-prices tables, overlays, rules."""

    def __init__(self, providers: Sequence[gp.Provider], overlay: ov.Overlay, rules: BillingRules) -> None:
        self.providers = providers
        self.by_id = {p.id: p for p in providers}
        self.overlay = overlay
        self.rules = rules

    def find(self, provider: str | None, model: str) -> NameMatch | None:
        """``provider``: a normalised (OTel) provider name or None; ``model`` as reported."""
        name, provider = self._alias(model.strip().lower(), provider)
        table = self._table(provider)
        any_provider = provider is None  # e.g. `tokentrail price m`: every entry may apply
        keys = (table, provider)
        candidates = _candidates(name)
        for tbl in self._tables(table, provider):
            for cand in candidates:
                found = self._in_table(tbl, cand, keys, any_provider)
                if found:
                    return found
        found = self._overlay_only(candidates, provider, keys, any_provider)
        if found:
            return found
        for vendor in self.rules.list_price_vendors(table, name):
            for cand in candidates:
                found = self._in_table(vendor, cand, (*keys, vendor), False)
                if found:
                    return found
        return None

    def _alias(self, name: str, provider: str | None) -> tuple[str, str | None]:
        table = self._table(provider)
        for alias in reversed(self.overlay.aliases):  # user aliases come last: they win
            if alias.name == name and (provider is None or ov.provider_matches(alias.provider, (table, provider))):
                return alias.model, alias.to_provider or provider
        return name, provider

    def _table(self, provider: str | None) -> str | None:
        return price_table_id(provider) or (provider if provider in self.by_id else None)

    def _tables(self, table: str | None, provider: str | None) -> list[str | None]:
        if table is not None:
            return [table]
        if provider is None:
            # The vendor whose naming the model follows, then the vendors' own tables.
            return [None, *(t for t in _DEFAULT_TABLES if t in self.by_id)]
        return []  # a provider genai-prices does not know: only the overlays can price it

    def _in_table(self, table: str | None, cand: str, keys: tuple, any_provider: bool) -> NameMatch | None:
        listing = self._listing(table, cand)
        gm = _find_model(listing, cand, self.providers) if listing is not None else None
        owner, from_fallback = self._owner(listing, gm)
        all_keys = (*keys, owner, listing.id if listing is not None else None)
        entries = self._entries((cand,) if gm is None else (cand, gm.id), all_keys,
                                anywhere=any_provider and table is None and gm is None)
        if gm is not None:
            return NameMatch(_qualified(owner, gm.id), owner, gm, from_fallback, entries, all_keys)
        if not _defines_a_model(entries):
            return None
        return NameMatch(_qualified(entries[-1].provider or table, entries[-1].model), None, None, False, entries,
                         all_keys)

    def _listing(self, table: str | None, cand: str) -> gp.Provider | None:
        """The genai-prices table to look ``cand`` up in (no table: the one whose naming it follows)."""
        if table is not None:
            return self.by_id.get(table)
        return next((p for p in self.providers if p.model_match is not None and p.model_match.is_match(cand)), None)

    def _owner(self, listing: gp.Provider | None, gm: gp.ModelInfo | None) -> tuple[str | None, bool]:
        """(the provider whose table lists ``gm``, whether it came from a fallback provider's table)."""
        if gm is None:
            return None, False
        if any(gm is m for m in listing.models):
            return listing.id, False
        return next((p.id for p in self.providers if any(gm is m for m in p.models)), listing.id), True

    def _entries(self, names: tuple[str, ...], keys: tuple, *, anywhere: bool) -> tuple[ov.ModelEntry, ...]:
        """The overlay entries for one of ``names`` of a provider in ``keys`` (``anywhere``: any provider)."""
        return tuple(
            e for e in self.overlay.models
            if (anywhere or ov.provider_matches(e.provider, keys)) and any(e.matches_name(n) for n in names)
        )

    def _overlay_only(self, candidates: list[str], provider: str | None, keys: tuple,
                      any_provider: bool) -> NameMatch | None:
        """Models of an unknown provider only the overlays price (self-hosted, private)."""
        for cand in candidates:
            entries = self._entries((cand,), keys, anywhere=any_provider)
            if _defines_a_model(entries):
                return NameMatch(_qualified(entries[-1].provider or provider, entries[-1].model), None, None, False,
                                 entries, keys)
        return None

    def discounts(self, match: NameMatch, model: str) -> tuple[ov.Discount, ...]:
        """The overlay discounts on ``match`` (``model``: the name as reported)."""
        gm_id = match.model.id if match.model is not None else None
        return tuple(
            d for d in self.overlay.discounts
            if ov.provider_matches(d.provider, match.keys)
            and ov.model_glob_matches(d.model, gm_id, match.pricing_model, model.strip().lower())
        )

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


def _find_model(listing: gp.Provider, cand: str, providers: Sequence[gp.Provider]) -> gp.ModelInfo | None:
    # Some ids genai-prices lists are not matched by their own match rules (Bedrock's
    # regional.* ids, which tokentrail reports as tokentrail.pricing.model): the id itself counts.
    found = listing.find_model(cand, all_providers=providers)
    if found is None:
        found = next((m for m in listing.models if m.id == cand), None)
    return found


def _defines_a_model(entries: tuple[ov.ModelEntry, ...]) -> bool:
    # Entries giving only long-context tiers or fees correct a listed model; alone they would
    # price its base tokens at $0.
    return any(e.prices for e in entries)


def _qualified(provider: str | None, model: str) -> str:
    return f"{provider}/{model}" if provider else model


def _candidates(name: str) -> list[str]:
    """The name, then progressively normalised forms of it (provider prefixes, snapshot dates)."""
    out = [name]
    # models/gemini-2.5-pro, publishers/google/models/x, openrouter vendor/x, ARNs; not
    # Fireworks' accounts/<account>/models/<model> ids, which its table lists whole.
    if not name.startswith("accounts/"):
        out.append(name.rsplit("/", 1)[-1])
        out.append(normalise_model_id(name))  # Bedrock ids: us.anthropic.claude-x-v1:0 -> claude-x
    for cand in list(out):
        stripped = _DATE_SUFFIX.sub("", cand)
        if stripped != cand:
            out.append(stripped)
    return list(dict.fromkeys(c for c in out if c))
