"""``whatif``: the ledger's real tokens priced again on another model, service tier or provider.

Every call is priced by the rate card's one rule (``adjustments.price_row``) at its own start
time, with its input, cache and output mix as recorded. The current side is what the ledger
says the call cost (net of adjustments). A call with no current cost (unpriced, no usage,
stopped by a breaker) is counted, never compared as $0. Token counts carry over exactly only
between models of one tokenizer: other pairs are flagged approximate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Sequence

from tokentrail.ledger import adjustments
from tokentrail.ledger.queries.common import (
    FIELDS, STOPPED_ERROR_TYPE, LedgerBase, Period, QueryError, Where, check_fields, label, selection,
)
from tokentrail.processor import pricing
from tokentrail.processor.pricing import card as rate_card
from tokentrail.processor.pricing.rules import TIERS
from tokentrail.processor.usage import Usage

#: The columns a re-priced call reads (``adjustments.price_row``'s) and what savings group and mark by.
COLUMNS = ("id", "trace_id", "span_id", "start_ns", "provider", "operation", "request_model", "response_model",
           "pricing_model", "pricing_tier", "service_tier", "input_tokens", "output_tokens", "cache_read_tokens",
           "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens", "cost_nano", "cost_fees_nano",
           "cost_status", "error_type", "tenant", "feature", "team", "user_id", "task_name", "task_id",
           "retry_attempt", "request_max_tokens")
#: Why a call has no current cost, or None: the ledger's kinds (``common.NO_COST_KIND``).
BLOCKED, NO_USAGE, UNPRICED = "blocked", "no_usage", "unpriced"

# OpenAI's tokenizers by model family (tiktoken's table): o200k_base for the GPT-4o generation on.
_O200K = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss", "codex")
_CL100K = ("gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada")


def load_calls(conn: Any, period: Period, where: Where, by: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The period's LLM calls in start order as dicts of ``COLUMNS`` plus ``net`` (cost with adjustments;
    None: no cost), ``kind`` (None for a call with a current cost, else blocked / no_usage / unpriced)
    and ``key`` (the values of the ``by`` fields)."""
    cond, params = selection(period, where)
    keys = "".join(f", {FIELDS[f]}" for f in by)
    sql = (f"SELECT {', '.join('spans.' + c for c in COLUMNS)}{keys}, adj.delta FROM spans"
           " LEFT JOIN (SELECT span_row, SUM(delta_nano) AS delta FROM adjustments GROUP BY span_row) AS adj"
           f" ON adj.span_row = spans.id WHERE llm = 1 AND {cond.replace('start_ns', 'spans.start_ns')}"
           " ORDER BY spans.start_ns, spans.id")
    calls = []
    for values in conn.execute(sql, params):
        call = dict(zip(COLUMNS, values))
        call["key"] = tuple(values[len(COLUMNS):-1])
        call["model"] = call["request_model"] or call["response_model"]  # as FIELDS["model"]
        delta = values[-1]
        if call["cost_nano"] is None and not delta:
            call["net"] = None
        else:
            call["net"] = (call["cost_nano"] or 0) + (delta or 0)
        call["kind"] = kind_of(call)
        calls.append(call)
    return calls


def kind_of(call: dict[str, Any]) -> str | None:
    if call["error_type"] == STOPPED_ERROR_TYPE:
        return BLOCKED
    if call["input_tokens"] is None:
        return NO_USAGE
    if call["net"] is None:
        return UNPRICED
    return None


def base_tier(call: dict[str, Any]) -> str | None:
    """The service tier a call was priced at (``batch`` of ``batch,context>200k``)."""
    return pricing.service_tier_of(call.get("pricing_tier") or call.get("service_tier"))


def price(call: dict[str, Any], **changes: Any) -> int | None:
    """The call priced by the current rate card at its own time and tier, with ``changes`` to its
    columns (model, provider, tier, token counts); None when the card has no price."""
    return adjustments.price_row({**call, "pricing_tier": base_tier(call), **changes})


def tokenizer(pricing_model: str | None) -> str | None:
    """The tokenizer family of a rate-card model (``openai/gpt-4o`` -> ``openai:o200k``): counts carry over
    between models of one family only. OpenAI by model family; every other vendor by vendor."""
    if not pricing_model:
        return None
    owner, _, name = pricing_model.partition("/")
    if owner in ("openai", "azure"):
        if name.startswith(_O200K):
            return "openai:o200k"
        if name.startswith(_CL100K):
            return "openai:cl100k"
        return f"openai:{name}"
    return owner if name else None


def pricing_model_of(provider: str | None, model: str, tier: str | None) -> str | None:
    resolved = rate_card.card().lookup(provider, model, tier)
    return None if resolved is None else resolved.pricing_model


def offers_tier(provider: str | None, model: str, tier: str | None) -> bool:
    """Whether the card prices ``model`` at ``tier`` itself (not at standard for want of a price)."""
    if not tier or tier == "standard":
        return True
    quote = pricing.quote(model, Usage(input_tokens=1000, output_tokens=100), provider=provider, service_tier=tier)
    return quote.priced and pricing.service_tier_of(quote.tier) == tier


@dataclass(frozen=True)
class Target:
    """What to price with: a model, a service tier, a provider; None keeps the call's own."""

    model: str | None = None
    tier: str | None = None
    provider: str | None = None
    _memo: dict = field(default_factory=dict, compare=False, repr=False)  # (provider, model, tier) -> pricing model

    def check(self) -> None:
        """One-line errors for a target the rate card cannot price."""
        if not (self.model or self.tier or self.provider):
            raise QueryError("say what to price with: --model MODEL, --tier TIER and/or --provider PROVIDER")
        if self.tier is not None and self.tier not in TIERS:
            raise QueryError(f"unknown tier {self.tier!r}: choose from {', '.join(sorted(TIERS))}")
        if self.model is None:
            return
        provider = pricing.normalize_provider(self.provider) if self.provider else None
        if pricing_model_of(provider, self.model, self.tier) is None:
            near = pricing.close_matches(self.model, provider)
            on = f" (provider {self.provider})" if self.provider else ""
            hint = f"; close: {', '.join(near)}" if near else ""
            raise QueryError(f"no price for model {self.model!r}{on} on the rate card{hint}"
                             " (add it to TOKENTRAIL_RATE_CARD)")
        if not offers_tier(provider, self.model, self.tier):
            raise QueryError(f"no {self.tier} price for {self.model!r} on the rate card")

    def changes(self, call: dict[str, Any]) -> dict[str, Any] | None:
        """The column changes that put ``call`` on the target; None when the card cannot price it there."""
        provider = self.provider or call["provider"]
        model = self.model or call["response_model"] or call["request_model"]
        tier = self.tier or base_tier(call)
        if not model:
            return None
        if self.model and not self.provider and self.pricing_model(provider, model, tier) is None:
            provider = None  # another vendor's model: found by its name
        pricing_model = self.pricing_model(provider, model, tier)
        if pricing_model is None:
            return None
        out: dict[str, Any] = {"provider": provider, "pricing_tier": tier, "pricing_model": pricing_model}
        if self.model or self.provider:
            out.update(request_model=model, response_model=model)
        return out

    def pricing_model(self, provider: str | None, model: str, tier: str | None) -> str | None:
        """The rate-card model pricing ``model`` at ``tier``; None when the card has no such price."""
        key = (provider, model, tier)
        if key not in self._memo:
            found = pricing_model_of(provider, model, tier)
            self._memo[key] = found if found is not None and offers_tier(provider, model, self.tier) else None
        return self._memo[key]

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "tier": self.tier, "provider": self.provider}


def _new_group() -> dict[str, Any]:
    return {"calls": 0, "compared_calls": 0, "current_nano_usd": 0, "whatif_nano_usd": 0, "approximate_calls": 0,
            UNPRICED + "_calls": 0, NO_USAGE + "_calls": 0, BLOCKED + "_calls": 0, "target_unpriced_calls": 0,
            "whatif_of_unpriced_nano_usd": None}


def _finish(g: dict[str, Any]) -> dict[str, Any]:
    if not g["compared_calls"]:  # nothing to compare: unknown, never $0
        g["current_nano_usd"] = g["whatif_nano_usd"] = None
    cur, new = g["current_nano_usd"], g["whatif_nano_usd"]
    g["change_nano_usd"] = None if cur is None else new - cur
    g["change"] = None if not cur else float(Fraction(new - cur, cur))
    g["approximate"] = g["approximate_calls"] > 0
    return g


def whatif(ledger: LedgerBase, by: Sequence[str], period: Period, target: Target, where: Where = ()) -> dict[str, Any]:
    """Per group of ``by``: the calls' cost in the opened ``ledger`` and their cost on ``target``."""
    by = check_fields(by)
    target.check()
    groups: dict[tuple, dict[str, Any]] = {}
    total = _new_group()
    for call in load_calls(ledger.conn, period, where, by):
        changes = None if call["kind"] in (BLOCKED, NO_USAGE) else target.changes(call)
        new = None if changes is None else price(call, **changes)
        for g in (groups.setdefault(call["key"], _new_group()), total):
            _add(g, call, changes, new)
    if total["target_unpriced_calls"] and not total["compared_calls"]:
        on = ", ".join(f"{k} {v}" for k, v in target.describe().items() if v)
        raise QueryError(f"the rate card prices none of the {total['target_unpriced_calls']:,} calls on {on}")
    rows = []
    for key, g in groups.items():
        rows.append({**{f: label(f, v) for f, v in zip(by, key)}, **_finish(g)})
    rows.sort(key=lambda r: (-(r["current_nano_usd"] if r["current_nano_usd"] is not None else -1), -r["calls"],
                             [r[f] for f in by]))
    return {"by": list(by), "period": period.describe(), "where": dict(where), "target": target.describe(),
            "rate_card_version": pricing.rate_card_version(), "rows": rows, "total": _finish(total)}


def _add(g: dict[str, Any], call: dict[str, Any], changes: dict[str, Any] | None, new: int | None) -> None:
    """Count ``call`` into group ``g``: ``new`` is its price on the target (None: not priced there)."""
    g["calls"] += 1
    kind = call["kind"]
    if kind in (BLOCKED, NO_USAGE):
        g[kind + "_calls"] += 1
    elif kind == UNPRICED:  # its tokens on the target, beside the comparison (no current cost to compare)
        g[UNPRICED + "_calls"] += 1
        if new is not None:
            g["whatif_of_unpriced_nano_usd"] = (g["whatif_of_unpriced_nano_usd"] or 0) + new
    elif new is None:
        g["target_unpriced_calls"] += 1
    else:
        g["compared_calls"] += 1
        g["current_nano_usd"] += call["net"]
        g["whatif_nano_usd"] += new
        if tokenizer(call["pricing_model"]) != tokenizer(changes["pricing_model"]):
            g["approximate_calls"] += 1
