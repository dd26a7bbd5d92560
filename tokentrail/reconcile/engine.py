"""The comparison: the ledger's calls against the provider's bill, per cell of the grain, and why they differ.

A cell is one value of the grain (day, model, and a join key where both sides know it). Its
residual (provider cost - ledger cost, nano-USD) is split into categories that add up to it exactly:

- ``untracked``: tokens the provider billed that the ledger never saw (traffic not instrumented:
  another service, a script, a shared key), at the provider's own rate for that token class;
  negative when the ledger holds tokens the bill does not (yet);
- ``unpriced``: tokens of calls the ledger holds but could not price, at the provider's rate;
- ``other_charges``: money without tokens (web search, tools) beyond the ledger's fees;
- ``tier``: tokens the provider billed at another service tier (batch, flex, priority...) than
  the one the ledger priced them at: each side's tokens are split by tier (the provider's usage
  and cost reports by ``service_tier``/``batch``, the ledger by the tier it priced), and tokens
  one tier is short of where another has too many are the same tokens, billed at another tier;
- ``price``: what is left, the same tokens at a different price on the same tier (negotiated
  discount, a price change); a systematic one per model becomes a suggested rate-card discount.

``no_usage`` calls (the ledger has the call but no usage) are counted; their tokens are part of
``untracked``, as the ledger cannot know them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Iterable, Sequence

from tokentrail.ledger.queries.common import NO_COST_KIND, STOPPED_ERROR_TYPE
from tokentrail.processor.usage import normalise_model_id
from tokentrail.reconcile.sources import CLASSES, OTHER, STANDARD, Line, tier_name

#: ``--by`` fields: a cell's key (project: OpenAI's; workspace: Anthropic's; api_key: the key's hint, which
#: Anthropic's cost report does not give: its per-key cells compare tokens, its cost stays keyless).
GRAIN = ("day", "model", "project", "workspace", "api_key")
DEFAULT_GRAIN = ("day", "model")
#: A price difference is systematic when every cell of a model is within this of the model's ratio.
SYSTEMATIC_SPREAD = Decimal("0.005")
#: And it is worth a suggestion when larger than this.
SUGGEST_FROM = Decimal("0.005")

_WHY = {
    "untracked": "tokens the provider billed that tokentrail never saw (traffic not instrumented: another service,"
                 " a script, a key shared with someone else)",
    "unpriced": "calls in the ledger with no price on the rate card",
    "no_usage": "calls in the ledger without usable usage (their tokens are part of untracked)",
    "other_charges": "charges without tokens (web search, tools) beyond the ledger's fees",
    "tier": "the same tokens billed at another service tier (batch, flex, priority) than the ledger priced",
    "price": "the same tokens at a different price on the same tier (negotiated discount, a price change)",
}


@dataclass
class Side:
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    cost_nano: dict[str, int] = field(default_factory=dict)
    calls: int = 0

    def total(self) -> int:
        return sum(self.cost_nano.values())


@dataclass
class Part:
    """One service tier of a cell: both sides' tokens and money at that tier."""

    provider: Side = field(default_factory=Side)
    ledger: Side = field(default_factory=Side)  # priced calls
    unpriced: Side = field(default_factory=Side)  # calls the ledger could not price (tokens only)

    def ledger_tokens(self, cls: str) -> int:
        return self.ledger.tokens[cls] + self.unpriced.tokens[cls]

    def rate(self, cls: str) -> Decimal | None:
        """nano-USD per token of a class: the provider's, else (tokens it did not bill) the ledger's."""
        if self.provider.tokens[cls] and cls in self.provider.cost_nano:
            return Decimal(self.provider.cost_nano[cls]) / self.provider.tokens[cls]
        if cls in ("cache_write", "cache_write_1h"):  # the ledger keeps one cost for both lifetimes
            tokens = self.ledger.tokens["cache_write"] + self.ledger.tokens["cache_write_1h"]
            cost = self.ledger.cost_nano.get("cache_write")
        else:
            tokens, cost = self.ledger.tokens[cls], self.ledger.cost_nano.get(cls)
        return Decimal(cost) / tokens if tokens and cost else None

    def at_rate(self, cls: str, tokens: int) -> int:
        rate = self.rate(cls) if tokens else None
        if rate is None:
            return 0
        return int((rate * tokens).to_integral_value(ROUND_HALF_EVEN))


def _sum_sides(sides: Iterable[Side]) -> Side:
    out = Side()
    for side in sides:
        _add(out.tokens, side.tokens)
        _add(out.cost_nano, side.cost_nano)
        out.calls += side.calls
    return out


@dataclass
class Cell:
    key: tuple
    parts: dict[str, Part] = field(default_factory=dict)  # service tier -> both sides at that tier
    no_usage_calls: int = 0
    one_tier: bool = False  # compared as one: the provider's costs do not tell its tiers apart

    def part(self, tier: str | None) -> Part:
        return self.parts.setdefault(tier, Part())

    @property
    def provider(self) -> Side:
        return _sum_sides(p.provider for p in self.parts.values())

    @property
    def ledger(self) -> Side:
        return _sum_sides(p.ledger for p in self.parts.values())

    @property
    def unpriced(self) -> Side:
        return _sum_sides(p.unpriced for p in self.parts.values())

    def ledger_tokens(self, cls: str) -> int:
        return sum(p.ledger_tokens(cls) for p in self.parts.values())

    def settle_tiers(self) -> None:
        """Cost lines that name no tier (None) are standard when others do name theirs; when none
        does and the usage has another tier, the tiers cannot be told apart: compared as one."""
        if None not in self.parts:
            return
        named = any(p.provider.cost_nano for tier, p in self.parts.items() if tier is not None)
        self.one_tier = not named and bool(set(self.parts) - {None, STANDARD})
        if self.one_tier:
            self.parts = {STANDARD: self.merged()}
        else:
            self.parts[STANDARD] = self.merged([self.parts.pop(None), self.parts.get(STANDARD, Part())])

    def merged(self, parts: Iterable[Part] | None = None) -> Part:
        parts = list(self.parts.values() if parts is None else parts)
        return Part(*(_sum_sides(getattr(p, s) for p in parts) for s in ("provider", "ledger", "unpriced")))

    def explain(self) -> list[dict]:
        """The residual's categories, largest first; their ``nano`` add up to the residual exactly."""
        provider, ledger, parts = self.provider, self.ledger, list(self.parts.values())
        residual = provider.total() - ledger.total()
        untracked = tier = tier_tokens = unpriced = 0
        for cls in CLASSES:
            # per tier: tokens the provider billed beyond the ledger's (or short of them), at the tier's rate
            gaps = []
            for p in parts:
                d = p.provider.tokens[cls] - p.ledger_tokens(cls)
                gaps.append((d, p.at_rate(cls, d)))
            more, less = sum(d for d, _ in gaps if d > 0), -sum(d for d, _ in gaps if d < 0)
            moved = min(more, less)  # the same tokens, on the provider's side at another tier
            tier_tokens += moved
            for d, nano in gaps:
                shifted = _share(nano, moved, more if d > 0 else less) if d and moved else 0
                tier += shifted
                untracked += nano - shifted
            unpriced += sum(p.at_rate(cls, p.unpriced.tokens[cls]) for p in parts)
        other = provider.cost_nano.get(OTHER, 0) - ledger.cost_nano.get(OTHER, 0)
        price = residual - untracked - tier - unpriced - other
        out = [
            {"category": "untracked", "nano": untracked,
             "tokens": sum(provider.tokens[c] - self.ledger_tokens(c) for c in CLASSES)},
            {"category": "unpriced", "nano": unpriced, "calls": self.unpriced.calls,
             "tokens": sum(self.unpriced.tokens.values())},
            {"category": "no_usage", "nano": 0, "calls": self.no_usage_calls},
            {"category": "other_charges", "nano": other},
            {"category": "tier", "nano": tier, "tokens": tier_tokens},
            {"category": "price", "nano": price},
        ]
        out = [c for c in out if c["nano"] or c.get("calls")]
        for c in out:
            c["why"] = _WHY[c["category"]]
        return sorted(out, key=lambda c: -abs(c["nano"]))

    def price_ratio(self) -> Decimal | None:
        """Provider price / ledger price of the tokens both sides priced (1 = the card's price)."""
        ledger = self.ledger.total()
        if not ledger:
            return None
        price = next((c["nano"] for c in self.explain() if c["category"] == "price"), 0)
        return Decimal(ledger + price) / ledger


def _share(nano: int, part: int, whole: int) -> int:
    """``nano * part / whole``, rounded half to even."""
    return int((Decimal(nano) * part / whole).to_integral_value(ROUND_HALF_EVEN))


# --- the ledger's side -----------------------------------------------------------------------------
_LEDGER_SQL = f"""
SELECT date(start_ns / 1000000000, 'unixepoch') AS day, COALESCE(response_model, request_model) AS model,
       provider_project, provider_workspace, api_key_hint, {NO_COST_KIND} AS kind, COUNT(*),
       SUM(input_tokens - COALESCE(cache_read_tokens, 0) - COALESCE(cache_write_tokens, 0)),
       SUM(cache_read_tokens), SUM(COALESCE(cache_write_tokens, 0) - COALESCE(cache_write_1h_tokens, 0)),
       SUM(cache_write_1h_tokens), SUM(output_tokens),
       SUM(cost_input_nano), SUM(cost_cache_read_nano), SUM(cost_cache_write_nano), SUM(cost_output_nano),
       SUM(cost_fees_nano), SUM(cost_nano), pricing_tier, service_tier
FROM spans
WHERE llm = 1 AND provider = ? AND start_ns >= ? AND start_ns < ?
  AND (error_type IS NULL OR error_type != '{STOPPED_ERROR_TYPE}')
GROUP BY day, model, provider_project, provider_workspace, api_key_hint, kind, pricing_tier, service_tier
"""


def ledger_cells(conn: sqlite3.Connection, provider: str, since_ns: int, until_ns: int,
                 grain: Sequence[str], workspaces: dict[str, str] | None = None) -> dict[tuple, Cell]:
    """The ledger's calls per cell; ``workspaces`` (key hint -> workspace) places calls with no workspace set."""
    cells: dict[tuple, Cell] = {}
    for row in conn.execute(_LEDGER_SQL, (provider, since_ns, until_ns)):
        day, model, project, workspace, key, kind, calls = row[:7]
        tokens = dict(zip(CLASSES, (int(t or 0) for t in row[7:12])))
        cost_input, cost_read, cost_write, cost_output, fees, total = (int(c or 0) for c in row[12:18])
        priced_tier, service_tier = row[18:20]
        if workspace is None and key and workspaces:
            workspace = next((w for hint, w in workspaces.items() if hints_match(hint, key)), None)
        cell = _cell(cells, grain, {"day": day, "model": normalise_model_id(model), "project": project,
                                    "workspace": workspace, "api_key": key})
        if kind == "no_usage":
            cell.no_usage_calls += calls
            continue
        # the tier the ledger charged (``standard,context>200k`` -> standard); unpriced: the tier it ran at
        part = cell.part(tier_name(priced_tier.partition(",")[0] if priced_tier else service_tier))
        side = part.unpriced if kind == "unpriced" else part.ledger
        side.calls += calls
        _add(side.tokens, tokens)
        if kind is None:
            # Components may not add up to the total (rounding of each); the input class takes the rest.
            parts = {"input": cost_input, "cache_read": cost_read, "cache_write": cost_write, "output": cost_output,
                     OTHER: fees}
            parts["input"] += total - sum(parts.values())
            _add(side.cost_nano, {k: v for k, v in parts.items() if v})
    return cells


def provider_cells(lines: Iterable[Line], grain: Sequence[str], ledger_hints: Iterable[str] = ()) -> dict[tuple, Cell]:
    """The provider's lines per cell; a key's redacted form is matched to the ledger's hint of it."""
    hints = list(ledger_hints)
    cells: dict[tuple, Cell] = {}
    for line in lines:
        key = next((h for h in hints if line.api_key and hints_match(line.api_key, h)), line.api_key)
        cell = _cell(cells, grain, {"day": line.day.isoformat(), "model": line.model, "project": line.project,
                                    "workspace": line.workspace, "api_key": key})
        side = cell.part(line.tier).provider
        _add(side.tokens, line.tokens)
        _add(side.cost_nano, line.cost_nano)
        side.calls += line.requests
    for cell in cells.values():
        cell.settle_tiers()
    return cells


def hints_match(redacted: str, hint: str) -> bool:
    """Whether the admin API's redacted key (``sk-abc...wxyz``, ``sk-ant-api03-R2D...igAA``) is the ledger's hint.

    Both keep a head and the last 4 characters; the provider may keep fewer of the head.
    """
    def parts(text: str) -> tuple[str, str]:
        head, _, tail = text.replace("*", ".").partition("...")
        return head.rstrip("."), tail.lstrip(".")

    (head_a, tail_a), (head_b, tail_b) = parts(redacted), parts(hint)
    return bool(tail_a) and tail_a[-4:] == tail_b[-4:] and (head_a.startswith(head_b) or head_b.startswith(head_a))


def _cell(cells: dict[tuple, Cell], grain: Sequence[str], values: dict) -> Cell:
    key = tuple(values[g] or None for g in grain)
    return cells.setdefault(key, Cell(key))


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


# --- the comparison ----------------------------------------------------------------------------------
def compare(ledger: dict[tuple, Cell], provider: dict[tuple, Cell], grain: Sequence[str], name: str) -> dict:
    """Both sides per cell, the capture rate and the explained residual; totals; suggested discounts."""
    cells: list[Cell] = []
    for key in sorted(set(ledger) | set(provider), key=lambda k: tuple("" if v is None else str(v) for v in k)):
        cell = ledger.get(key) or Cell(key)
        theirs = provider.get(key) or Cell(key)
        if theirs.one_tier:  # the provider's costs did not say which tier: neither side is split
            cell.parts = {STANDARD: cell.merged()}
        for tier, part in theirs.parts.items():
            cell.part(tier).provider = part.provider
        cells.append(cell)
    total = Cell(("total",))
    total.parts = {STANDARD: total.merged([cell.merged() for cell in cells])}
    total.no_usage_calls = sum(cell.no_usage_calls for cell in cells)
    explained: dict[str, dict] = {}
    for cell in cells:
        for c in cell.explain():
            into = explained.setdefault(c["category"], {"category": c["category"], "nano": 0, "why": c["why"]})
            into["nano"] += c["nano"]
            if "calls" in c:
                into["calls"] = into.get("calls", 0) + c["calls"]
    return {
        "grain": list(grain),
        "cells": [_cell_json(cell, grain) for cell in cells],
        "total": {**_sides_json(total), "explained": sorted(explained.values(), key=lambda c: -abs(c["nano"]))},
        "suggestions": suggestions(cells, grain, name),
    }


def suggestions(cells: Sequence[Cell], grain: Sequence[str], provider: str) -> list[dict]:
    """A rate-card discount per model whose price difference is the same in every cell (and not tiny)."""
    if "model" not in grain:
        return []
    index = list(grain).index("model")
    by_model: dict[str, list[Cell]] = {}
    for cell in cells:
        if cell.ledger.total() and cell.provider.total():
            by_model.setdefault(cell.key[index] or "", []).append(cell)
    out = []
    for model, group in sorted(by_model.items()):
        ratios = [r for r in (c.price_ratio() for c in group) if r is not None]
        if not ratios:
            continue
        ledger_total = sum(c.ledger.total() for c in group)
        price = sum(next((x["nano"] for x in c.explain() if x["category"] == "price"), 0) for c in group)
        ratio = Decimal(ledger_total + price) / ledger_total
        if abs(1 - ratio) < SUGGEST_FROM or max(abs(r - ratio) for r in ratios) > SYSTEMATIC_SPREAD:
            continue
        percent = ((1 - ratio) * 100).quantize(Decimal("0.01")).normalize()
        out.append({
            "model": model,
            "discount": float(round(1 - ratio, 4)),
            "price_nano": price,
            "cells": len(group),
            # a TOKENTRAIL_RATE_CARD overlay entry, for the card and `tokentrail reprice --rate-card`
            "rate_card": f"discounts:\n  - provider: {provider}\n    model: {model}\n    percent: {percent:f}\n"
                         f"    source: tokentrail reconcile",
        })
    return out


def _sides_json(cell: Cell) -> dict:
    provider, ledger = cell.provider.total(), cell.ledger.total()
    return {
        "provider": {"tokens": dict(cell.provider.tokens), "cost_nano": provider, "requests": cell.provider.calls},
        "ledger": {"tokens": {c: cell.ledger_tokens(c) for c in CLASSES}, "cost_nano": ledger,
                   "calls": cell.ledger.calls + cell.unpriced.calls + cell.no_usage_calls,
                   "unpriced_calls": cell.unpriced.calls, "no_usage_calls": cell.no_usage_calls},
        "residual_nano": provider - ledger,
        "capture_rate": capture_rate(ledger, provider),
    }


def _cell_json(cell: Cell, grain: Sequence[str]) -> dict:
    out = {**dict(zip(grain, cell.key)), **_sides_json(cell), "explained": cell.explain()}
    if len(cell.parts) > 1:  # both sides per service tier (the ledger's: the tier it priced)
        out["tiers"] = {tier: {"provider_tokens": sum(p.provider.tokens.values()),
                               "provider_cost_nano": p.provider.total(),
                               "ledger_tokens": sum(p.ledger_tokens(c) for c in CLASSES),
                               "ledger_cost_nano": p.ledger.total()}
                        for tier, p in sorted(cell.parts.items())}
    return out


def capture_rate(ledger_nano: int, provider_nano: int) -> float | None:
    """Ledger / provider; None when the provider billed nothing."""
    if not provider_nano:
        return None
    return float(Decimal(ledger_nano) / provider_nano)

