"""Rate-card overlays: the bundled corrections file and the user's ``TOKENTRAIL_RATE_CARD``.

Both files share one YAML shape (see README, "Environment variables"):

``models``     explicit prices (USD per million tokens; fees in USD per call), optionally
               long-context ``tiers`` and an ``effective_from``/``effective_until`` window. An entry
               naming a model genai-prices knows corrects it (fields it omits keep the genai-prices
               value); any other name adds a model (private or self-hosted ones).
``aliases``    names that mean another model (Azure deployment names, internal gateway names).
``discounts``  a negotiated percentage off every price of the matching provider/models.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping

import yaml

from tokentrail.processor.pricing.providers import normalize_provider, price_table_id

BUNDLED_PATH = Path(__file__).with_name("overlay.yaml")
# libyaml's parser when PyYAML has it: the same safe loading, a tenth of the time.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Overlay price field -> genai-prices price key (USD per million tokens).
PRICE_FIELDS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
}


class OverlayError(ValueError):
    """The overlay file is not in the documented shape."""


@dataclass(frozen=True)
class Window:
    start_ns: int | None = None  # inclusive
    end_ns: int | None = None  # exclusive

    def contains(self, ts_ns: int) -> bool:
        return (self.start_ns is None or ts_ns >= self.start_ns) and (self.end_ns is None or ts_ns < self.end_ns)

    def boundaries(self) -> tuple[int, ...]:
        return tuple(b for b in (self.start_ns, self.end_ns) if b is not None)


@dataclass(frozen=True)
class ModelEntry:
    provider: str | None  # price-table id or normalised provider name; None = any
    model: str
    names: tuple[str, ...]
    window: Window
    prices: Mapping[str, Decimal]  # genai-prices price key -> USD per million tokens
    tiers: tuple[tuple[int, Mapping[str, Decimal]], ...]  # (above_input_tokens, prices)
    fees: Mapping[str, Decimal]  # tool name -> USD per call
    source: str
    origin: str  # "overlay" | "user"

    def matches_name(self, name: str) -> bool:
        return any(_name_match(pattern, name) for pattern in self.names)


@dataclass(frozen=True)
class Alias:
    provider: str | None
    name: str
    model: str
    to_provider: str | None
    source: str = ""


@dataclass(frozen=True)
class Discount:
    provider: str | None
    model: str  # glob, "*" = all
    percent: Decimal
    window: Window
    source: str


@dataclass
class Overlay:
    models: list[ModelEntry] = field(default_factory=list)
    aliases: list[Alias] = field(default_factory=list)
    discounts: list[Discount] = field(default_factory=list)
    digest: str = ""

    def extend(self, other: "Overlay") -> None:
        self.models.extend(other.models)
        self.aliases.extend(other.aliases)
        self.discounts.extend(other.discounts)


def provider_key(provider: object) -> str | None:
    """The key overlay entries and lookups compare on: genai-prices table id, else the OTel name."""
    if provider is None or provider == "*":
        return None
    name = normalize_provider(provider)
    return price_table_id(name) or name


def provider_matches(entry_provider: str | None, keys: tuple[str | None, ...]) -> bool:
    return entry_provider is None or entry_provider in keys


def _name_match(pattern: str, name: str) -> bool:
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(name, pattern)
    return pattern == name


def model_glob_matches(pattern: str, *names: str | None) -> bool:
    return any(n is not None and _name_match(pattern, n) for n in names)


def read_yaml(path: Path, error: type[ValueError] = OverlayError) -> tuple[Any, str]:
    """(the parsed file, the digest of its bytes) of a rate-card YAML file."""
    raw = path.read_bytes()
    try:
        data = yaml.load(raw, Loader=_LOADER) or {}
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
    return data, hashlib.sha256(raw).hexdigest()[:8]


def load(path: Path, *, origin: str, require_source: bool) -> Overlay:
    data, digest = read_yaml(path)
    overlay = parse(data, origin=origin, require_source=require_source, where=str(path))
    overlay.digest = digest
    return overlay


def parse(data: Any, *, origin: str, require_source: bool, where: str = "overlay") -> Overlay:
    if not isinstance(data, Mapping):
        raise OverlayError(f"{where}: top level must be a mapping")
    unknown = set(data) - {"version", "models", "aliases", "discounts"}
    if unknown:
        raise OverlayError(f"{where}: unknown top-level keys {sorted(unknown)}")
    out = Overlay()
    for i, item in enumerate(data.get("models") or ()):
        out.models.append(_model_entry(item, origin, require_source, f"{where}: models[{i}]"))
    for i, item in enumerate(data.get("aliases") or ()):
        out.aliases.append(_alias(item, require_source, f"{where}: aliases[{i}]"))
    for i, item in enumerate(data.get("discounts") or ()):
        out.discounts.append(_discount(item, require_source, f"{where}: discounts[{i}]"))
    return out


def _source(item: Mapping[str, Any], require_source: bool, ctx: str) -> str:
    source = item.get("source")
    if require_source and not (isinstance(source, str) and source.strip()):
        raise OverlayError(f"{ctx}: every bundled entry needs a 'source' note")
    return str(source or "")


def _alias(item: Any, require_source: bool, ctx: str) -> Alias:
    _require_mapping(item, ctx)
    name, model = item.get("name"), item.get("model")
    if not isinstance(name, str) or not isinstance(model, str):
        raise OverlayError(f"{ctx}: needs string 'name' and 'model'")
    return Alias(
        provider=provider_key(item.get("provider")),
        name=name.strip().lower(),
        model=model.strip().lower(),
        to_provider=normalize_provider(item.get("to_provider")),
        source=_source(item, require_source, ctx),
    )


def _discount(item: Any, require_source: bool, ctx: str) -> Discount:
    _require_mapping(item, ctx)
    source = _source(item, require_source, ctx)
    percent = non_negative_decimal(item.get("percent"), f"{ctx}.percent")
    if not Decimal(0) <= percent <= Decimal(100):
        raise OverlayError(f"{ctx}: percent must be between 0 and 100")
    return Discount(
        provider=provider_key(item.get("provider")),
        model=str(item.get("model", "*")).strip().lower(),
        percent=percent,
        window=_window(item, ctx),
        source=source,
    )


def _model_entry(item: Any, origin: str, require_source: bool, ctx: str) -> ModelEntry:
    _require_mapping(item, ctx)
    model = item.get("model")
    if not isinstance(model, str) or not model.strip():
        raise OverlayError(f"{ctx}: needs a 'model' name")
    source = _source(item, require_source, ctx)
    extra = item.get("match") or ()
    if isinstance(extra, str):
        extra = (extra,)
    names = tuple(dict.fromkeys(n.strip().lower() for n in (model, *extra)))
    prices = _prices(item.get("prices") or {}, f"{ctx}.prices")
    tiers = [_tier(tier, f"{ctx}.tiers[{j}]") for j, tier in enumerate(item.get("tiers") or ())]
    fees = {str(tool): non_negative_decimal(value, f"{ctx}.fees.{tool}")
            for tool, value in (item.get("fees") or {}).items()}
    if not prices and not tiers and not fees:
        raise OverlayError(f"{ctx}: gives no prices, tiers or fees")
    return ModelEntry(
        provider=provider_key(item.get("provider")),
        model=model.strip().lower(),
        names=names,
        window=_window(item, ctx),
        prices=prices,
        tiers=tuple(sorted(tiers)),
        fees=fees,
        source=source,
        origin=origin,
    )


def _tier(tier: Any, ctx: str) -> tuple[int, dict[str, Decimal]]:
    _require_mapping(tier, ctx)
    above = tier.get("above_input_tokens")
    if not isinstance(above, int) or isinstance(above, bool) or above < 0:
        raise OverlayError(f"{ctx}: needs a non-negative integer 'above_input_tokens'")
    return above, _prices({k: v for k, v in tier.items() if k != "above_input_tokens"}, ctx)


def _prices(raw: Any, ctx: str) -> dict[str, Decimal]:
    _require_mapping(raw, ctx)
    unknown = set(raw) - set(PRICE_FIELDS)
    if unknown:
        raise OverlayError(f"{ctx}: unknown price fields {sorted(unknown)} (known: {sorted(PRICE_FIELDS)})")
    return {PRICE_FIELDS[k]: non_negative_decimal(v, f"{ctx}.{k}") for k, v in raw.items()}


def non_negative_decimal(value: Any, ctx: str, error: type[ValueError] = OverlayError) -> Decimal:
    """A non-negative number of a rate-card YAML file, exactly as written."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise error(f"{ctx}: expected a number, got {value!r}")
    try:
        # str() first so YAML floats like 0.075 stay exactly 0.075.
        result = Decimal(str(value))
    except ArithmeticError as exc:
        raise error(f"{ctx}: expected a number, got {value!r}") from exc
    if not result.is_finite() or result < 0:
        raise error(f"{ctx}: expected a non-negative number, got {value!r}")
    return result


def _window(item: Mapping[str, Any], ctx: str) -> Window:
    start = _instant(item.get("effective_from"), f"{ctx}.effective_from")
    end = _instant(item.get("effective_until"), f"{ctx}.effective_until")
    if start is not None and end is not None and end <= start:
        raise OverlayError(f"{ctx}: effective_until must be after effective_from")
    return Window(start, end)


def _instant(value: Any, ctx: str) -> int | None:
    """A date (UTC midnight) or datetime (naive = UTC) as epoch nanoseconds."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise OverlayError(f"{ctx}: not an ISO date/datetime: {value!r}") from exc
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1000
    if isinstance(value, _dt.date):
        return date_ns(value)
    raise OverlayError(f"{ctx}: expected a date or datetime, got {value!r}")


def date_ns(day: _dt.date) -> int:
    midnight = _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.timezone.utc)
    return int(midnight.timestamp()) * 1_000_000_000


def _require_mapping(value: Any, ctx: str) -> None:
    if not isinstance(value, Mapping):
        raise OverlayError(f"{ctx}: expected a mapping, got {type(value).__name__}")
