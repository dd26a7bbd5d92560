"""Pricing: genai-prices data + bundled overlay and billing rules + the user's ``TOKENTRAIL_RATE_CARD``.

Pure: no provider SDK imports, never fetches prices at run time.

- ``quote(model, usage, provider=, at=, service_tier=) -> Quote``: exact integer nano-USD.
- ``price_span(attributes, start_time_ns) -> dict``: cost attributes to add to an LLM span.
- ``ensure_priced(attributes, start_time_ns)``: a finished span's attributes, priced if they were not.
- ``rate_card_version()``, ``close_matches(model)``, ``reload()``.
"""

from __future__ import annotations

import difflib

from tokentrail.processor.pricing import card as _card
from tokentrail.processor.pricing.card import ENV_RATE_CARD, reload
from tokentrail.processor.pricing.overlay import OverlayError
from tokentrail.processor.pricing.providers import normalize_provider
from tokentrail.processor.pricing.quote import NO_USAGE, PRICED, UNPRICED, Quote, quote
from tokentrail.processor.pricing.span import ensure_priced, price_span

__all__ = [
    "ENV_RATE_CARD",
    "NO_USAGE",
    "PRICED",
    "UNPRICED",
    "OverlayError",
    "Quote",
    "close_matches",
    "ensure_priced",
    "normalize_provider",
    "price_span",
    "quote",
    "rate_card_version",
    "reload",
    "service_tier_of",
    "user_overlay_error",
]


def service_tier_of(pricing_tier: str | None) -> str | None:
    """The service tier a priced tier names: ``batch`` of ``batch,context>200k`` (the context tier follows
    from the tokens whenever they are priced again)."""
    return pricing_tier.split(",")[0] or None if pricing_tier else None


def rate_card_version() -> str:
    """genai-prices version + digests of the bundled files and the user overlay, e.g.
    ``genai-prices-0.2.3+ov.1a2b3c4d+user.5e6f7a8b``."""
    return _card.card().version


def user_overlay_error() -> str | None:
    """Why the ``TOKENTRAIL_RATE_CARD`` file was ignored, or None."""
    return _card.card().user_error


def close_matches(model: str, provider: str | None = None, n: int = 5) -> list[str]:
    """Rate-card names close to ``model``, for "unknown model" messages."""
    names = _card.card().known_names(provider)
    name = (model or "").strip().lower()
    matches = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    if len(matches) < n:
        matches += [m for m in names if name and name in m and m not in matches][: n - len(matches)]
    return matches
