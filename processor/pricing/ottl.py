"""The rate card as OTTL: a ``transform`` processor that prices GenAI spans at the Collector.

For spans of any language's instrumentation that arrive without ``tokentrail.cost.status``:
the same usage rule, name resolution, effective dates, long-context tiers and integer
femto-USD arithmetic (each component rounded half up to nano-USD) as ``price_span``, for
the models listed; any other model is ``unpriced``. ``processor_config(models)`` gives the
processor's configuration, ``render`` a Collector config file holding it.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import yaml

from tokentrail.processor.pricing import card as _card
from tokentrail.processor.pricing import providers as _providers
from tokentrail.processor.pricing.quote import NO_USAGE, PRICED, UNPRICED
from tokentrail.processor.pricing.rates import FEMTO_PER_NANO, REQUEST_FEE, Rates
from tokentrail.processor.pricing.rules import STANDARD, TIERS
from tokentrail.processor.usage import MAX_TOKENS_PER_CALL, WRAPPER_OPERATIONS
from tokentrail.semconv import attributes as attr

PROCESSOR = "transform/tokentrail_pricing"
_HALF = FEMTO_PER_NANO // 2
_MARKERS = (attr.GEN_AI_OPERATION_NAME, attr.GEN_AI_PROVIDER_NAME, attr.GEN_AI_SYSTEM, attr.GEN_AI_REQUEST_MODEL,
            attr.GEN_AI_RESPONSE_MODEL, attr.GEN_AI_USAGE_INPUT_TOKENS, attr.GEN_AI_USAGE_OUTPUT_TOKENS)
# cache key -> the attribute(s) it is read from (the first present), as Usage.from_attributes reads them
_COUNTS = (("in", (attr.GEN_AI_USAGE_INPUT_TOKENS,)), ("out", (attr.GEN_AI_USAGE_OUTPUT_TOKENS,)),
           ("read", (attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,)),
           ("write", (attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS)),
           ("w1h", (attr.TOKENTRAIL_USAGE_CACHE_WRITE_1H_INPUT_TOKENS,)),
           ("reason", (attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,)))


class GenerateError(ValueError):
    """A model list that cannot be turned into statements (a pattern matching no rate-card name)."""


@dataclass(frozen=True)
class Entry:
    """One model name's rates for the providers that price it alike."""

    model: str  # lower case, as matched against the span's model
    providers: tuple[str, ...]  # raw provider spellings, lower case; "" = the span names no provider
    pricing_model: str
    periods: tuple[tuple[int | None, int | None, Rates | None], ...]  # [start, end) ns, rates (None: unpriced)


def _q(value: str) -> str:
    return json.dumps(value)


def _escape(text: str) -> str:
    """``text`` as a literal in an RE2 pattern (JSON quoting then gives the OTTL string escapes)."""
    return "".join("\\" + ch if ch.isascii() and not ch.isalnum() else ch for ch in text)


def _a(name: str) -> str:
    return f"span.attributes[{_q(name)}]"


def expand(specs: Iterable[str]) -> list[tuple[str | None, str]]:
    """``[provider:]model`` specs (``*``/``?`` globs over the rate card's names) -> (provider, name)."""
    card = _card.card()
    out: list[tuple[str | None, str]] = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        provider, model = split_spec(spec)
        if any(ch in model for ch in "*?["):
            names = fnmatch.filter(card.known_names(provider), model)
            if not names:
                raise GenerateError(f"{spec}: no rate-card model matches")
        else:
            names = [model]
        out.extend((provider, n) for n in names if (provider, n) not in out)
    return out


def split_spec(spec: str) -> tuple[str | None, str]:
    """``provider:model`` when the part before the first colon names a provider (model ids have colons too:
    ``gpt-4o:extended``, ``...-v1:0``), else ``(None, model)``; lower case."""
    head, sep, rest = spec.strip().lower().partition(":")
    name = _providers.normalize_provider(head)
    if sep and rest and (name in _providers.spellings() or name in _overlay_providers()):
        return head, rest.strip()
    return None, spec.strip().lower()


def _overlay_providers() -> set[str]:
    names = _card.card().names
    return {e.provider for e in names.overlay.models if e.provider}


def entries(models: Sequence[tuple[str | None, str]]) -> tuple[list[Entry], list[str]]:
    """The entries of (provider or None, model) pairs, and the names that cannot be priced at the Collector."""
    card = _card.card()
    spellings = _providers.spellings()
    out: list[Entry] = []
    skipped: list[str] = []
    for provider, model in models:
        if provider is None:
            # Without a provider: every provider value the span may carry (none included) under which
            # the rate card prices the name, each resolved as price_span resolves it.
            candidates = [("", ("",)), *spellings.items(),
                          *((p, (p,)) for p in sorted(_overlay_providers()) if p not in spellings)]
        else:
            name = _providers.normalize_provider(provider)
            candidates = [(name, spellings.get(name, (name,)))]
        groups: list[tuple[str, tuple, list[str]]] = []  # (pricing model, periods, provider spellings)
        for value, raw in candidates:
            resolved = card.lookup(value or None, model, STANDARD)
            if resolved is None:
                continue
            if resolved.per_call:
                skipped.append(f"{provider + ':' if provider else ''}{model} (price changes with the time of day)")
                break
            periods = _periods(resolved)
            same = next((g for g in groups if g[0] == resolved.pricing_model and g[1] == periods), None)
            if same is None:
                groups.append((resolved.pricing_model, periods, list(raw)))
            else:
                same[2].extend(raw)
        else:
            for pricing_model, periods, raw in groups:
                out.append(Entry(model, tuple(dict.fromkeys(raw)), pricing_model, periods))
            if not groups:
                skipped.append(f"{provider + ':' if provider else ''}{model} (not on the rate card)")
    return out, skipped


def _periods(resolved) -> tuple:
    """((start, end, rates), ...) over the model's price periods; neighbours of equal rates merged."""
    bounds = resolved.boundaries
    starts: list[int | None] = [None, *bounds]
    ends: list[int | None] = [*bounds, None]
    out = []
    for start, end in zip(starts, ends):
        at = start if start is not None else 0  # any instant of the period, never one near its end
        rates = resolved.rates_at(at)
        if out and out[-1][2] == rates:  # a boundary that changes nothing for this tier
            out[-1] = (out[-1][0], end, rates)
        else:
            out.append((start, end, rates))
    return tuple(out)


def _rates_map(rates: Rates, flat: tuple, label: str, pricing_model: str) -> str:
    request_fee = rates.fees.get(REQUEST_FEE, 0)
    items: dict[str, Any] = {}
    for key, rate in zip(("i", "cr", "w5", "w1", "o", "rs"), flat):
        items[key + "q"], items[key + "m"] = divmod(rate, FEMTO_PER_NANO)
    items.update({"f": (request_fee + _HALF) // FEMTO_PER_NANO, "t": label, "pm": pricing_model,
                  # per-tool fees need the tool counts, which only tokentrail's own spans carry
                  "tools": any(k != REQUEST_FEE for k in rates.fees)})
    body = ", ".join(f"{_q(k)}: {_literal(v)}" for k, v in items.items())
    return "{" + body + "}"


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return _q(value)


def _entry_statements(entry: Entry) -> list[str]:
    model = f'span.cache["m"] == {_q(entry.model)}'
    who = " or ".join(f'span.cache["p"] == {_q(p)}' for p in entry.providers)
    match = f"{model} and ({who})" if len(entry.providers) > 1 else f"{model} and {who}"
    out = []
    for start, end, rates in entry.periods:
        when = []
        if start is not None:
            when.append(f"span.start_time_unix_nano >= {start}")
        if end is not None:
            when.append(f"span.start_time_unix_nano < {end}")
        where = " and ".join([match, *when])
        if rates is None:
            out.append(f'set(span.cache["none"], true) where {where}')
            continue
        out.append(f'set(span.cache["r"], {_rates_map(rates, rates.base, rates.base_label, entry.pricing_model)}) '
                   f"where {where}")
        for above, flat, label in reversed(rates.tiers):  # lowest first: the highest exceeded wins
            out.append(f'set(span.cache["r"], {_rates_map(rates, flat, label, entry.pricing_model)}) '
                       f'where {where} and span.cache["in"] > {above}')
    return out


def _usage_statements() -> list[str]:
    """Usage.from_attributes in OTTL: integer (or integer-valued double) counts, parts that add up, none beyond
    MAX_TOKENS_PER_CALL."""
    zeros = ", ".join(f'"{key}": 0' for key, _ in _COUNTS)
    out = [f"merge_maps(span.cache, {{{zeros}}}, \"upsert\")"]
    for key, names in _COUNTS:
        for i, name in enumerate(names):
            first = "" if i == 0 else " and " + " and ".join(f"{_a(n)} == nil" for n in names[:i])
            a = _a(name)
            whole = f"(IsInt({a}) or (IsDouble({a}) and Double(Int({a})) == {a}))"
            out.append(f'set(span.cache["{key}"], Int({a})) where {whole}{first}')
            out.append(f'set(span.cache["bad"], true) where {a} != nil and not {whole}{first}')
    c = 'span.cache["{}"]'.format
    out.append(f'set(span.cache["bad"], true) where {_a(attr.GEN_AI_USAGE_INPUT_TOKENS)} == nil and '
               f"{_a(attr.GEN_AI_USAGE_OUTPUT_TOKENS)} == nil")
    negative = " or ".join(f"{c(key)} < 0" for key, _ in _COUNTS)
    read, write, w1h, inp, out_, reason = (c(k) for k in ("read", "write", "w1h", "in", "out", "reason"))
    parts = (f"{read} + {write} > {inp} or {w1h} > {write} or {reason} > {out_}"
             f" or {inp} > {MAX_TOKENS_PER_CALL} or {out_} > {MAX_TOKENS_PER_CALL}")
    out.append(f'set(span.cache["bad"], true) where {negative} or {parts}')
    return out


def _name_statements() -> list[str]:
    """The provider and model price_span looks up (lower case), or none: a non-standard service tier."""
    out = []
    for key, names in (("p", (attr.GEN_AI_PROVIDER_NAME, attr.GEN_AI_SYSTEM)),
                       ("m", (attr.GEN_AI_RESPONSE_MODEL, attr.GEN_AI_REQUEST_MODEL))):
        for i, name in enumerate(names):
            a = _a(name)
            unset = f" and ({_a(names[0])} == nil or {_a(names[0])} == \"\")" if i else ""
            out.append(f'set(span.cache["{key}"], ConvertCase({a}, "lower")) where IsString({a}) and {a} != ""{unset}')
    out.append('set(span.cache["p"], "") where span.cache["p"] == nil')
    rules = _card.card().rules
    other = sorted({t for t in TIERS if t != STANDARD} | {k for k, v in rules.tier_aliases.items() if v != STANDARD})
    tier = _a(attr.TOKENTRAIL_SERVICE_TIER)
    pattern = _q("^(" + "|".join(_escape(t) for t in other) + ")$")
    # Only standard prices are generated: a batch/flex/priority call stays unpriced (never a wrong price).
    out.append(f'delete_key(span.cache, "m") where IsString({tier}) and IsMatch(ConvertCase({tier}, "lower"), {pattern})')
    out.append('delete_key(span.cache, "m") where span.cache["bad"] == true')
    return out


def _nano(*terms: tuple[str, str]) -> str:
    """sum(tokens x rate), rounded half up to nano-USD, in int64 without overflow: each rate is split into whole
    nano-USD (q) and femto remainder (m), so tokens x rate / 10^6 = tokens x q + (tokens x m) / 10^6 exactly."""
    r = 'span.cache["r"]'
    whole = " + ".join(f'{tokens} * {r}["{rate}q"]' for tokens, rate in terms)
    rest = " + ".join(f'{tokens} * {r}["{rate}m"]' for tokens, rate in terms)
    return f"{whole} + ({rest} + {_HALF}) / {FEMTO_PER_NANO}"


def _cost_statements(version: str) -> list[str]:
    r = 'span.cache["r"]'
    c = 'span.cache["{}"]'.format
    priced = f"{r} != nil"
    fresh = f'({c("in")} - {c("read")} - {c("write")})'
    write_5m = f'({c("write")} - {c("w1h")})'
    output = f'({c("out")} - {c("reason")})'
    out = [
        f'delete_key(span.cache, "r") where {priced} and {r}["tools"] == true and '
        f"{_a(attr.TOKENTRAIL_USAGE_TOOL_CALLS)} != nil",
        'delete_key(span.cache, "r") where span.cache["none"] == true',
        f'set({c("ci")}, {_nano((fresh, "i"))}) where {priced}',
        f'set({c("cr")}, {_nano((c("read"), "cr"))}) where {priced}',
        f'set({c("cw")}, {_nano((write_5m, "w5"), (c("w1h"), "w1"))}) where {priced}',
        # reasoning at its own rate ((out - r) x o + r x rs is out x o when the rates are equal)
        f'set({c("co")}, {_nano((output, "o"), (c("reason"), "rs"))}) where {priced}',
        f'set({c("total")}, {c("ci")} + {c("cr")} + {c("cw")} + {c("co")} + {r}["f"]) where {priced}',
    ]

    def usd(expr: str) -> str:
        return f"Double({expr}) / 1000000000.0"

    sets = [
        (attr.GEN_AI_USAGE_COST_AMOUNT, usd(c("total"))),
        (attr.GEN_AI_USAGE_COST_CURRENCY, '"USD"'),
        (attr.GEN_AI_USAGE_COST_SOURCE, '"local"'),
        (attr.TOKENTRAIL_COST_INPUT, usd(c("ci"))),
        (attr.TOKENTRAIL_COST_CACHE_READ, usd(c("cr"))),
        (attr.TOKENTRAIL_COST_CACHE_WRITE, usd(c("cw"))),
        (attr.TOKENTRAIL_COST_OUTPUT, usd(c("co"))),
        (attr.TOKENTRAIL_COST_FEES, usd(f'{r}["f"]')),
        (attr.TOKENTRAIL_COST_NANO_USD, c("total")),
        (attr.TOKENTRAIL_COST_STATUS, _q(PRICED)),
        (attr.TOKENTRAIL_PRICING_TIER, f'{r}["t"]'),
        (attr.TOKENTRAIL_PRICING_MODEL, f'{r}["pm"]'),
        (attr.TOKENTRAIL_RATE_CARD_VERSION, _q(version)),
    ]
    merged = ", ".join(f"{_q(name)}: {value}" for name, value in sets)
    out.append(f'merge_maps(span.attributes, {{{merged}}}, "upsert") where {priced}')
    savings = usd(f'{_nano((c("read"), "i"))} - {c("cr")}')
    out.append(f'set({_a(attr.TOKENTRAIL_COST_CACHE_SAVINGS)}, {savings}) where {priced} and {c("read")} > 0')
    out.append(f'set({_a(attr.TOKENTRAIL_COST_STATUS)}, {_q(NO_USAGE)}) where span.cache["bad"] == true')
    out.append(f'set({_a(attr.TOKENTRAIL_COST_STATUS)}, {_q(UNPRICED)}) where span.cache["bad"] == nil and {r} == nil')
    return out


def _condition() -> str:
    """is_genai_call, on a span with no cost status yet (priced by its SDK: left alone)."""
    any_marker = " or ".join(f"{_a(n)} != nil" for n in _MARKERS)
    op = _a(attr.GEN_AI_OPERATION_NAME)
    not_wrapper = " and ".join(f"{op} != {_q(w)}" for w in sorted(WRAPPER_OPERATIONS))
    return f"{_a(attr.TOKENTRAIL_COST_STATUS)} == nil and ({any_marker}) and {not_wrapper}"


def processor_config(models: Sequence[tuple[str | None, str]]) -> tuple[dict[str, Any], list[str]]:
    """(the transform processor's configuration for these (provider, model) pairs, the names left unpriced).

    One statement group per model-name prefix: a span runs the statements of its own prefix only (the others
    cost it one condition each); a last group without rates marks the rest unpriced or no_usage.
    """
    found, skipped = entries(models)
    version = _card.card().version
    common = [*_usage_statements(), *_name_statements()]
    cost = _cost_statements(version)
    groups = []
    for prefixes, bucket in _packed(_buckets(found, 1)):
        statements = [*common, *(s for entry in bucket for s in _entry_statements(entry)), *cost]
        groups.append({"context": "span", "conditions": [f"{_model_starts(prefixes)} and {_condition()}"],
                       "statements": statements})
    groups.append({"context": "span", "conditions": [_condition()], "statements": [*common, *cost]})
    return {"error_mode": "ignore", "trace_statements": groups}, skipped


# Entries per statement group: a span pays one condition per group and one statement per entry of its own
# group; ~30 balances the two for 500 models.
_BUCKET = 30


def _buckets(found: list[Entry], length: int) -> list[tuple[str, list[Entry]]]:
    by_prefix: dict[str, list[Entry]] = {}
    for entry in found:
        by_prefix.setdefault(entry.model[:length], []).append(entry)
    out = []
    for prefix, bucket in by_prefix.items():
        whole = [e for e in bucket if len(e.model) <= length]  # the prefix is the name itself
        longer = [e for e in bucket if len(e.model) > length]
        if len(bucket) > _BUCKET and longer:
            if whole:
                out.append((f"{prefix}$", whole))
            out += _buckets(longer, length + 1)
        else:
            out.append((prefix, bucket))
    return out


def _packed(buckets: list[tuple[str, list[Entry]]]) -> list[tuple[list[str], list[Entry]]]:
    """Neighbouring prefixes together, up to ``_BUCKET`` entries a group."""
    out: list[tuple[list[str], list[Entry]]] = []
    for prefix, bucket in sorted(buckets, key=lambda b: b[0]):
        if out and len(out[-1][1]) + len(bucket) <= _BUCKET:
            out[-1][0].append(prefix)
            out[-1][1].extend(bucket)
        else:
            out.append(([prefix], list(bucket)))
    return out


def _model_starts(prefixes: list[str]) -> str:
    """The span's model (response, else request; any case) starts with one of ``prefixes`` (``$``: is it)."""
    alternatives = "|".join(_escape(p.rstrip("$")) + ("$" if p.endswith("$") else "") for p in prefixes)
    pattern = _q(f"(?i)^({alternatives})")
    response, request = _a(attr.GEN_AI_RESPONSE_MODEL), _a(attr.GEN_AI_REQUEST_MODEL)
    return (f'((IsString({response}) and {response} != "" and IsMatch({response}, {pattern}))'
            f' or (({response} == nil or {response} == "") and IsString({request}) and IsMatch({request}, {pattern})))')


def render(config: dict[str, Any], *, pipelines: dict[str, list[str]] | None = None) -> str:
    """A Collector config file with the processor (and, given, the pipelines' processor lists)."""
    doc: dict[str, Any] = {"processors": {PROCESSOR: config}}
    if pipelines:
        doc["service"] = {"pipelines": {name: {"processors": procs} for name, procs in pipelines.items()}}
    header = (f"# tokentrail collector pricing: rate card {_card.card().version}.\n"
              "# Merge over the Collector config (--config=collector-config.yaml --config=<this file>).\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=100_000, allow_unicode=True)


def with_pricing(processors: Sequence[str]) -> list[str]:
    """A traces pipeline's processors with pricing added after the memory limiter (before sampling and batching,
    which read the cost)."""
    procs = [p for p in processors if p != PROCESSOR]
    at = procs.index("memory_limiter") + 1 if "memory_limiter" in procs else 0
    return [*procs[:at], PROCESSOR, *procs[at:]]
