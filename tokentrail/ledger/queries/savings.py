"""``savings``: concrete opportunities in the recorded traffic, ranked by dollars (docs/savings.md).

Five kinds, each figure reproducible from the ledger rows it lists:

- ``waste``: money already spent for nothing: the calls of task runs that ended ``budget_exceeded``
  or ``error``; calls that ended in an error but were billed; billed attempts that were retried.
  Each call counts once, in that order. The ledger's cost (net of adjustments).
- ``caching``: an owner's cache-hit ratio far below its peers' median (same feature and model),
  and prompt growth per feature against the previous period of equal length.
- ``batch``: features and tasks the config marks batch-eligible, priced at the batch tier.
- ``output_cap``: answers far longer than the feature's median with no ``max_tokens``.
- ``tiering``: a cheaper model of the same family on the same tokens (a what-if, not a quality claim).

A lever's saving is the difference of two prices by the current rate card, each call at its own
time (``whatif.price``). The kinds are alternatives: they overlap and are not summed.
"""

from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass, field
from fractions import Fraction
from math import floor
from typing import Any, Callable, Iterable, Sequence

import yaml

from tokentrail.ledger.queries.common import (
    NO_COST_KINDS, LedgerBase, Period, QueryError, Where, label, percentile, usd,
)
from tokentrail.ledger.queries.whatif import BLOCKED, load_calls, price, tokenizer
from tokentrail.processor import pricing
from tokentrail.processor.pricing import card as rate_card

ENV_CONFIG = "TOKENTRAIL_SAVINGS"
#: The config beside a ledger (``tokentrail.db`` -> ``tokentrail.savings.yaml``), read when none is named.
CONFIG_SUFFIX = ".savings.yaml"
WASTE, CACHING, BATCH, OUTPUT_CAP, TIERING = "waste", "caching", "batch", "output_cap", "tiering"
KINDS = (WASTE, CACHING, BATCH, OUTPUT_CAP, TIERING)
FAILED_OUTCOMES = ("budget_exceeded", "error")

#: "Far below the median": at least this many points of cache-hit ratio under the peers' median.
CACHE_GAP = Fraction(20, 100)
#: Peers needed for a median worth comparing with (owners of one feature on one model).
MIN_PEERS = 3
#: Prompt growth worth a look: input tokens per request up by a quarter or more.
GROWTH = Fraction(5, 4)
#: "Far above the median output": more than this many times the feature's p50; the cap is there.
CAP_FACTOR = 4
#: Calls needed for a median (output caps) or a mean (prompt growth) of a group.
MIN_CALLS = 5
#: Rows listed per opportunity in JSON (the count and the filter always cover them all).
MAX_ROWS = 200

# Model families, smallest last: the cheaper siblings a model name can be swapped for.
_SIZE_SUFFIX = re.compile(r"-(mini|nano)$")
_CLAUDE_TIERS = ("opus", "sonnet", "haiku")
_GEMINI_TIERS = ("-pro", "-flash", "-flash-lite")


@dataclass(frozen=True)
class Config:
    """The user's savings config (YAML; ``--config`` or ``$TOKENTRAIL_SAVINGS``)."""

    batch_eligible: tuple[str, ...] = ()  # feature or task names that need no interactive answer
    cheaper_models: dict = field(default_factory=dict)  # model -> [cheaper models]: replaces the family rule
    path: str | None = None


def load_config(path: str | None, ledger_path: str | None = None) -> Config:
    """The config at ``path``, else ``$TOKENTRAIL_SAVINGS``, else the one beside the ledger if there is one;
    an empty config when there is none."""
    path = path or os.environ.get(ENV_CONFIG) or None
    if path is None and ledger_path:
        beside = os.path.splitext(ledger_path)[0] + CONFIG_SUFFIX
        path = beside if os.path.isfile(beside) else None
    if path is None:
        return Config()
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except UnicodeDecodeError:
        raise QueryError(f"savings config {path} is not UTF-8 text") from None
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL in it
        raise QueryError(f"cannot read savings config {path!r}: {getattr(exc, 'strerror', None) or exc}") from None
    except yaml.YAMLError as exc:
        raise QueryError(f"savings config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    data = {} if data is None else data
    if not isinstance(data, dict) or set(data) - {"batch_eligible", "cheaper_models"}:
        raise QueryError(f"savings config {path}: expected a mapping with batch_eligible (a list of feature or task"
                         " names) and/or cheaper_models (model: [cheaper models])")
    eligible = data.get("batch_eligible") or []
    cheaper = data.get("cheaper_models") or {}
    if not isinstance(eligible, list) or not all(isinstance(n, str) and n for n in eligible):
        raise QueryError(f"savings config {path}: batch_eligible must be a list of feature or task names")
    if not isinstance(cheaper, dict) or not all(isinstance(k, str) and isinstance(v, list)
                                                and all(isinstance(m, str) for m in v) for k, v in cheaper.items()):
        raise QueryError(f"savings config {path}: cheaper_models must map a model to a list of models")
    return Config(tuple(eligible), {k.lower(): tuple(v) for k, v in cheaper.items()}, path)


def cheaper_siblings(pricing_model: str, config: Config = Config()) -> tuple[str, ...]:
    """The smaller models of the same family (``openai/gpt-5.4`` -> gpt-5.4-mini, gpt-5.4-nano), or the
    config's ``cheaper_models`` for it. Names only: whether the card prices them is checked apart."""
    owner, _, name = pricing_model.partition("/")
    if name in config.cheaper_models or pricing_model in config.cheaper_models:
        return config.cheaper_models.get(name) or config.cheaper_models[pricing_model]
    if "claude" in name:
        for i, tier in enumerate(_CLAUDE_TIERS):
            if tier in name:
                return tuple(name.replace(tier, smaller) for smaller in _CLAUDE_TIERS[i + 1:])
        return ()
    if "gemini" in name:
        for i, tier in reversed(list(enumerate(_GEMINI_TIERS))):
            if tier in name:
                return tuple(name.replace(tier, smaller) for smaller in _GEMINI_TIERS[i + 1:])
        return ()
    size = _SIZE_SUFFIX.search(name)
    base = name[: size.start()] if size else name
    sizes = ("", "-mini", "-nano")
    here = sizes.index(f"-{size.group(1)}" if size else "")
    return tuple(base + s for s in sizes[here + 1:])


@dataclass
class Opportunity:
    kind: str
    what: str
    owner: dict[str, str]  # the group it is about (also the --where that selects its calls)
    saving_nano: int
    spend_nano: int  # what the calls it stands on cost (by the same rule as the saving)
    detail: str
    rows: list[int]

    def as_dict(self, rank: int) -> dict[str, Any]:
        return {"rank": rank, "kind": self.kind, "what": self.what, "owner": self.owner,
                "where": [f"{k}={v}" for k, v in self.owner.items()], "calls": len(self.rows),
                "saving_nano_usd": self.saving_nano, "spend_nano_usd": self.spend_nano, "detail": self.detail,
                "rows": sorted(self.rows)[:MAX_ROWS], "rows_listed": min(len(self.rows), MAX_ROWS)}


def savings(ledger: LedgerBase, period: Period, config: Config = Config(), where: Where = ()) -> dict[str, Any]:
    """Every opportunity of the period in the opened ``ledger``, largest saving first."""
    conn = ledger.conn
    calls = load_calls(conn, period, where)
    previous = period.previous()
    earlier = load_calls(conn, previous, where) if previous is not None else []
    found: list[Opportunity] = []
    found += waste(conn, calls)
    found += low_cache_hits(calls)
    found += prompt_growth(calls, earlier, period)
    found += batch(calls, config)
    found += output_caps(calls)
    found += tiering(calls, config)
    found = [o for o in found if o.saving_nano > 0]
    found.sort(key=lambda o: (-o.saving_nano, KINDS.index(o.kind), o.what, sorted(o.owner.items())))
    no_cost = {f"{k}_calls": sum(1 for c in calls if c["kind"] == k) for k in NO_COST_KINDS}
    return {"period": period.describe(), "compared_with": previous.describe() if previous else None,
            "where": dict(where), "config": config.path, "batch_eligible": list(config.batch_eligible),
            "rate_card_version": pricing.rate_card_version(), "calls": len(calls), **no_cost,
            "opportunities": [o.as_dict(i + 1) for i, o in enumerate(found)]}


# --- helpers ---------------------------------------------------------------------------------
def _priced(calls: Iterable[dict]) -> list[dict]:
    """Calls the current card prices as recorded (the base of every lever), with ``now`` set."""
    out = []
    for c in calls:
        if c["kind"] is None:
            now = c.get("now", ...)
            if now is ...:
                now = c["now"] = price(c)
            if now is not None:
                out.append(c)
    return out


def _group(calls: Iterable[dict], *fields: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for c in calls:
        groups.setdefault(tuple(c[f] for f in fields), []).append(c)
    return groups


def _owner(**values: Any) -> dict[str, str]:
    names = {"user_id": "user", "task_name": "task"}
    return {names.get(k, k): label(names.get(k, k), v) for k, v in values.items()}


def _lever(calls: Sequence[dict], change: Callable[[dict], dict | None]) -> tuple[int, int, list[int]]:
    """(saving, spend, rows): each call priced as recorded and with ``change(call)``'s columns."""
    saving = spend = 0
    rows = []
    for c in calls:
        changes = change(c)
        if changes is None:
            continue
        new = price(c, **changes)
        if new is None or new >= c["now"]:
            continue
        saving += c["now"] - new
        spend += c["now"]
        rows.append(c["id"])
    return saving, spend, rows


def _pct(x: Fraction | float) -> str:
    return f"{float(x) * 100:.0f}%"


# --- waste -----------------------------------------------------------------------------------
def waste(conn: Any, calls: Sequence[dict]) -> list[Opportunity]:
    """Spend with nothing to show for it; each call counted once: failed task run, billed error, retried."""
    billed = [c for c in calls if c["net"] and c["kind"] != BLOCKED]
    failed = _failed_runs(conn, {(c["trace_id"], c["task_id"]) for c in billed if c["task_id"]})
    out: list[Opportunity] = []
    taken: set[int] = set()
    runs: dict[tuple, dict] = {}
    for c in billed:
        outcome = failed.get((c["trace_id"], c["task_id"]))
        if outcome:
            g = runs.setdefault((c["task_name"], outcome), {"runs": set(), "calls": []})
            g["runs"].add((c["trace_id"], c["task_id"]))
            g["calls"].append(c)
            taken.add(c["id"])
    for (task, outcome), g in runs.items():
        spent = sum(c["net"] for c in g["calls"])
        n = len(g["runs"])
        out.append(Opportunity(WASTE, "failed task runs", _owner(task_name=task), spent, spent,
                               f"{n} run{'s' * (n != 1)} ended {outcome}: all {len(g['calls'])} calls' spend",
                               [c["id"] for c in g["calls"]]))
    errors = [c for c in billed if c["error_type"] and c["id"] not in taken]
    for (feature,), group in _group(errors, "feature").items():
        spent = sum(c["net"] for c in group)
        kinds = ", ".join(sorted({c["error_type"] for c in group}))
        out.append(Opportunity(WASTE, "billed errors", _owner(feature=feature), spent, spent,
                               f"ended in an error ({kinds}), billed",
                               [c["id"] for c in group]))
        taken.update(c["id"] for c in group)
    retried = [c for c in retried_attempts(calls) if c["net"] and c["id"] not in taken]
    for (feature,), group in _group(retried, "feature").items():
        spent = sum(c["net"] for c in group)
        out.append(Opportunity(WASTE, "retried attempts", _owner(feature=feature), spent, spent,
                               "billed, then retried: another attempt of the request followed",
                               [c["id"] for c in group]))
    return out


def _failed_runs(conn: Any, runs: set[tuple]) -> dict[tuple, str]:
    """(trace id, task id) -> the outcome of each of ``runs`` whose task span ended badly."""
    if not runs:
        return {}
    marks = ", ".join("?" * len(FAILED_OUTCOMES))
    sql = (f"SELECT trace_id, task_id, task_outcome FROM spans WHERE llm IS NULL AND task_id IS NOT NULL"
           f" AND task_outcome IN ({marks})")
    return {(t, i): o for t, i, o in conn.execute(sql, FAILED_OUTCOMES) if (t, i) in runs}


def retried_attempts(calls: Sequence[dict]) -> list[dict]:
    """The calls a later attempt of the same request followed.

    A request's attempts: calls of one trace, task run and owner in start order, each numbered one more
    than the one before (``retry_attempt`` NULL or 0, then 1, 2...). Every attempt but a request's last
    was retried. Consecutive numbers, because an SDK's own retries raise the number of the call they
    happen in (one span per call): a call the SDK retried twice is attempt 2 of nothing before it.
    """
    out = []
    for group in _group(calls, "trace_id", "task_id", "tenant", "feature").values():
        chain: list[dict] = []
        for c in group:  # start order (load_calls)
            attempt = c["retry_attempt"] or 0
            if not (chain and attempt == (chain[-1]["retry_attempt"] or 0) + 1):
                out += chain[:-1]
                chain = []
            chain.append(c)
        out += chain[:-1]
    return out


# --- caching ---------------------------------------------------------------------------------
def low_cache_hits(calls: Sequence[dict]) -> list[Opportunity]:
    """Tenants whose cache-hit ratio is CACHE_GAP or more under the median of their peers (the tenants
    of the same feature and model), priced as if each call had read the median share from cache."""
    out = []
    for (feature, model), group in _group(_priced(calls), "feature", "model").items():
        owners = {k: v for k, v in _group(group, "tenant").items() if sum(c["input_tokens"] for c in v)}
        if len(owners) < MIN_PEERS:
            continue
        ratios = {k: Fraction(sum(c["cache_read_tokens"] or 0 for c in v), sum(c["input_tokens"] for c in v))
                  for k, v in owners.items()}
        median = statistics.median(ratios.values())
        for (tenant,), ratio in ratios.items():
            if ratio > median - CACHE_GAP:
                continue

            def at_median(c: dict) -> dict | None:
                room = c["input_tokens"] - (c["cache_write_tokens"] or 0)
                read = min(room, floor(median * c["input_tokens"]))
                return {"cache_read_tokens": read} if read > (c["cache_read_tokens"] or 0) else None

            saving, spend, rows = _lever(owners[(tenant,)], at_median)
            out.append(Opportunity(
                CACHING, "low cache hits", _owner(tenant=tenant, feature=feature, model=model), saving, spend,
                f"cache hits {_pct(ratio)} vs the median {_pct(median)} of {len(owners)} tenants on this feature"
                " and model: priced at the median", rows))
    return out


def prompt_growth(calls: Sequence[dict], earlier: Sequence[dict], period: Period) -> list[Opportunity]:
    """Features whose input tokens per request grew GROWTH-fold or more against the previous period;
    the growth's cost: each call priced with its input (fresh, cached, written) scaled back to the
    previous period's mean."""
    before = {k: v for k, v in _group((c for c in earlier if c["input_tokens"] is not None), "feature").items()
              if len(v) >= MIN_CALLS}
    out = []
    for (feature,), group in _group(_priced(calls), "feature").items():
        old = before.get((feature,))
        if old is None or len(group) < MIN_CALLS:
            continue
        was = Fraction(sum(c["input_tokens"] for c in old), len(old))
        now = Fraction(sum(c["input_tokens"] for c in group), len(group))
        if not was or now < was * GROWTH:
            continue
        scale = was / now

        def scaled(c: dict) -> dict:
            return {k: floor((c[k] or 0) * scale) for k in
                    ("input_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens")}

        saving, spend, rows = _lever(group, scaled)
        days = (period.until_ns - period.since_ns) / 86400e9
        out.append(Opportunity(
            CACHING, "prompt growth", _owner(feature=feature), saving, spend,
            f"input per request {floor(now):,} vs {floor(was):,} the {days:g} days before"
            f" (+{_pct(now / was - 1)}): priced back to {floor(was):,}", rows))
    return out


# --- batch -----------------------------------------------------------------------------------
def batch(calls: Sequence[dict], config: Config) -> list[Opportunity]:
    """The calls of batch-eligible features and tasks (config), priced at the batch tier."""
    eligible = set(config.batch_eligible)
    out = []
    chosen = [c for c in _priced(calls) if c["feature"] in eligible or c["task_name"] in eligible]
    for (feature, task), group in _group(chosen, "feature", "task_name").items():
        name = task if task in eligible else feature
        saving, spend, rows = _lever(group, lambda c: None if c["pricing_tier"] and c["pricing_tier"].startswith(
            "batch") else {"pricing_tier": "batch"})
        owner = _owner(task_name=task) if task in eligible else _owner(feature=feature)
        out.append(Opportunity(BATCH, "batch tier", owner, saving, spend,
                               "batch-eligible (config): priced at the batch tier", rows))
    return out


# --- output caps -----------------------------------------------------------------------------
def output_caps(calls: Sequence[dict]) -> list[Opportunity]:
    """Calls with no max_tokens whose output is more than CAP_FACTOR x the p50 of their feature and
    model: the output beyond CAP_FACTOR x p50 (the cap) priced away."""
    out = []
    for (feature, model), group in _group(_priced(calls), "feature", "model").items():
        if len(group) < MIN_CALLS:
            continue
        p50 = percentile(sorted(c["output_tokens"] for c in group), 0.5)
        if not p50:
            continue
        cap = CAP_FACTOR * p50
        long = [c for c in group if c["request_max_tokens"] is None and c["output_tokens"] > cap]
        if not long:
            continue
        saving, spend, rows = _lever(long, lambda c: {
            "output_tokens": cap, "reasoning_tokens": min(c["reasoning_tokens"] or 0, cap)})
        out.append(Opportunity(
            OUTPUT_CAP, "output cap", _owner(feature=feature, model=model), saving, spend,
            f"no max_tokens, output over {CAP_FACTOR}x the median ({p50:,}): priced at max_tokens={cap:,}", rows))
    return out


# --- model tiering ---------------------------------------------------------------------------
def tiering(calls: Sequence[dict], config: Config) -> list[Opportunity]:
    """Per feature and model: the cheapest smaller model of the same family the card prices, on the
    same tokens (exact when the tokenizer is the same). A what-if, never a quality claim."""
    out = []
    for (feature, model, pricing_model), group in _group(_priced(calls), "feature", "model",
                                                         "pricing_model").items():
        if not pricing_model:
            continue
        best = None
        for sibling in cheaper_siblings(pricing_model, config):  # the nearest one that saves: one step down
            def on(c: dict, sibling: str = sibling) -> dict | None:
                tier = pricing.service_tier_of(c["pricing_tier"]) or "standard"
                if rate_card.card().lookup(c["provider"], sibling, tier) is None:
                    return None
                return {"request_model": sibling, "response_model": sibling}

            saving, spend, rows = _lever(group, on)
            if saving > 0:
                best = (sibling, saving, spend, rows)
                break
        if best is None:
            continue
        sibling, saving, spend, rows = best
        resolved = rate_card.card().lookup(group[0]["provider"], sibling, None)
        exact = resolved is not None and tokenizer(resolved.pricing_model) == tokenizer(pricing_model)
        out.append(Opportunity(
            TIERING, "cheaper model", _owner(feature=feature, model=model), saving, spend,
            f"on {sibling}: {_usd(spend - saving)} instead of {_usd(spend)}"
            f" ({'same tokenizer' if exact else 'approximate: another tokenizer'}); a what-if, not a quality claim",
            rows))
    return out


def _usd(nano: int) -> str:
    return f"${usd(nano):,.6f}"
