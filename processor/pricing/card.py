"""The rate card: genai-prices data + bundled overlay and billing rules + the user's overlay.

``lookup(provider, model, service tier)`` resolves a name (``names``) into its price periods
(``rates``) once per key; pricing a call is then a few integer multiplications.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import genai_prices
from genai_prices import data as genai_data

from tokentrail.processor.pricing import overlay as ov
from tokentrail.processor.pricing import rules as billing
from tokentrail.processor.pricing.names import Names
from tokentrail.processor.pricing.providers import normalize_provider
from tokentrail.processor.pricing.rates import Resolved
from tokentrail.state import BoundedMemo, BoundedSet, register_reset

logger = logging.getLogger("tokentrail.pricing")

ENV_RATE_CARD = "TOKENTRAIL_RATE_CARD"
_MEMO = 4096

# (provider, model, service tier) as found on spans -> Resolved: one dict hit when warm.
# Both belong to the current card: ``reload()`` clears them.
_resolved: BoundedMemo[tuple, Resolved | None] = BoundedMemo(_MEMO)
_warned: BoundedSet[tuple] = BoundedSet(_MEMO)


class RateCard:
    def __init__(self) -> None:
        # The data bundled with the installed genai-prices, never a snapshot an app may have fetched with
        # genai_prices.UpdatePrices: the rate-card version must identify the prices used.
        overlay = ov.load(ov.BUNDLED_PATH, origin="overlay", require_source=True)
        self.rules = billing.load()
        # One digest for the bundled corrections: the overlay and the billing rules.
        bundled = hashlib.sha256(f"{overlay.digest}{self.rules.digest}".encode()).hexdigest()[:8]
        version = f"genai-prices-{genai_prices.__version__}+ov.{bundled}"
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
                overlay.extend(user)
                version += f"+user.{user.digest}"
        self.version = version
        self.names = Names(genai_data.providers, overlay, self.rules)
        self._compute = self._resolve  # bound once: lookup is on every priced span

    def lookup(self, provider: Any, model: Any, service_tier: Any) -> Resolved | None:
        """The model's price periods for the raw span values; None for a model of no price."""
        try:
            return _resolved.get((provider, model, service_tier), self._compute)
        except TypeError:  # unhashable junk in attributes
            return None

    def _resolve(self, key: tuple) -> Resolved | None:
        provider, model, service_tier = key
        if not isinstance(model, str) or not model.strip():
            return None
        pname = normalize_provider(provider)
        match = self.names.find(pname, model)
        if match is None:
            warn_once((pname, model), "no price for model %r (provider %r): its calls are marked unpriced;"
                      " add it to %s", model, pname, ENV_RATE_CARD)
            return None
        tier = self.rules.service_tier(service_tier)
        return Resolved(match, self.names.discounts(match, model), tier, self.rules, warn_once)

    def known_names(self, provider: str | None = None) -> list[str]:
        return self.names.known_names(provider)


def warn_once(key: tuple, message: str, *args: Any) -> None:
    if _warned.add(key):
        logger.warning(message, *args)


_card: RateCard | None = None
_card_lock = threading.Lock()


def card() -> RateCard:
    current = _card
    if current is None:
        with _card_lock:
            if _card is None:
                _install(RateCard())
            current = _card
    return current


def reload() -> RateCard:
    """Re-read the overlays (and ``TOKENTRAIL_RATE_CARD``) and drop every memoised resolution."""
    with _card_lock:
        return _install(RateCard())


def _install(new: RateCard | None) -> RateCard | None:
    global _card
    _card = new
    _resolved.clear()
    _warned.clear()
    return new


@register_reset
def _reset() -> None:
    with _card_lock:
        _install(None)


def now_ns() -> int:
    return time.time_ns()
