"""``chargeback``: a period's spend per owner (team, tenant, feature or cost centre) that adds up to the bill.

Each owner's measured cost (net of re-pricing adjustments) plus, when a stored reconciliation covers the
period (``tokentrail reconcile``), the provider's unexplained residual: the invoice minus everything the
ledger measured for that provider on the reconciled days. The residual is kept as its own row per provider
or allocated proportionally to the owners' net cost on those days, per provider, in integer nano-USD by
largest remainder, so the rows add up to the invoice exactly.

The same figures come at the grain day x provider x model x (team, feature, tenant) as ``lines``, the
rows of the FOCUS export: each owner's allocation is split over its lines by the same rule.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterable, Sequence

from tokentrail.costcentres import CostCentres
from tokentrail.ledger import adjustments
from tokentrail.ledger.queries.common import (
    NO_COST_FIELDS, NO_COST_KIND, LedgerBase, Period, QueryError, Where, label, month_period, ratio, selection, usd,
)

BY = ("team", "tenant", "feature", "cost_centre")
ALLOCATE = ("none", "proportional")
_DAY_NS = 86400 * 10**9
_TOKENS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")

# One row per line: the owner fields and model a statement needs (NULL for the others, so a statement by
# tenant groups far fewer lines than the FOCUS grain), provider, and the UTC day number.
_KEY = ("{team}", "{feature}", "{tenant}", "provider", "{model}", "start_ns / 86400000000000")
_CELLS = """
SELECT {key}, COUNT(*), SUM(input_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(output_tokens),
       SUM(cost_nano), COUNT(cost_nano)
FROM spans WHERE llm = 1 AND {cond} GROUP BY 1, 2, 3, 4, 5, 6
"""
# Why calls have no cost: only those rows are read beyond the covering report index.
_NO_COST = """
SELECT {key}, {kind}, COUNT(*) FROM spans WHERE llm = 1 AND {cond} AND cost_nano IS NULL GROUP BY 1, 2, 3, 4, 5, 6, 7
"""


def largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in integers proportionally to non-negative ``weights`` (sum > 0), summing to it exactly.

    Each share is its exact quota rounded down; the units left go to the largest remainders (ties: the
    larger weight, then the earlier one). Works for a negative total too (quotas floor towards -inf).
    """
    whole = sum(weights)
    base = [total * w // whole for w in weights]
    left = total - sum(base)  # 0 <= left < number of weights
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] - base[i] * whole), -weights[i], i))
    for i in order[:left]:
        base[i] += 1
    return base


@dataclass
class _Cell:
    """One day x provider x model x (team, feature, tenant) of the ledger."""

    team: str | None
    feature: str | None
    tenant: str | None
    provider: str | None
    model: str | None
    day: str
    calls: int
    tokens: dict[str, int]
    cost: int | None  # measured at the rate card; None when no call could be priced
    no_cost: dict[str, int]
    adjustment: int = 0
    allocated: int = 0

    @property
    def net(self) -> int | None:
        if self.cost is None and not self.adjustment:
            return None
        return (self.cost or 0) + self.adjustment


@dataclass
class _Coverage:
    """What stored reconciliations say about one provider over the statement's days."""

    provider: str
    invoice: dict[str, int] = field(default_factory=dict)  # day -> the provider's cost that day
    runs: list[int] = field(default_factory=list)

    def status(self, period_days: list[str]) -> str:
        if not self.invoice:
            return "none"
        return "reconciled" if set(self.invoice) >= set(period_days) else "partial"


def chargeback(ledger: LedgerBase, by: str, period: Period, where: Where = (), allocate: str = "none",
               centres: CostCentres | None = None, month: str | None = None, lines: bool = False) -> dict:
    """The statement: rows per owner, the residual, the invoice coverage; ``lines`` for the FOCUS grain."""
    if by not in BY:
        raise QueryError(f"unknown --by {by!r}: choose from {', '.join(BY)}")
    if allocate not in ALLOCATE:
        raise QueryError(f"unknown --allocate {allocate!r}: choose from {', '.join(ALLOCATE)}")
    if by == "cost_centre" and centres is None:
        raise QueryError("--by cost_centre needs a cost centres file: --cost-centres FILE or TOKENTRAIL_COST_CENTRES")
    if period.since_ns is None:
        raise QueryError("a chargeback needs a start: --month 2026-11 or --since 2026-11-01")
    fields = ("team", "feature", "tenant") if by == "cost_centre" or lines else (by,)
    cells = _cells(ledger.conn, period, where, (*fields, "model") if lines else fields)
    days = _whole_days(period)
    notes: list[str] = []
    coverage: dict[str, _Coverage] = {}
    if where:
        notes.append("--where selects part of the calls: the providers' invoices cover all of them, so no"
                     " residual is shown and the total is the measured cost of the selected calls")
    else:
        coverage = _coverage(ledger.conn, days, notes)
    owner = _owner_of(by, centres)
    rows = _owner_rows(cells, owner, by, centres)
    billed = _reconciled(cells, owner, coverage)
    residuals = {p: sum(cov.invoice.values()) - sum(c.net for group in billed[p].values() for c in group)
                 for p, cov in coverage.items()}
    residual_rows = []
    for provider, residual in sorted(residuals.items()):
        if not residual:
            continue
        weights = {key: sum(c.net for c in group) for key, group in billed[provider].items()}
        if allocate == "proportional" and sum(weights.values()) > 0 and min(weights.values()) >= 0:
            keys = sorted(k for k, w in weights.items() if w > 0)
            for key, share in zip(keys, largest_remainder(residual, [weights[k] for k in keys])):
                rows[key]["residual_nano_usd"] += share
                # the owner's share over its lines, by the same rule: FOCUS rows add up to the statement's
                mine = [c for c in billed[provider][key] if c.net > 0]
                for c, part in zip(mine, largest_remainder(share, [c.net for c in mine])):
                    c.allocated += part
        else:
            if allocate == "proportional":
                notes.append(f"{provider}: nothing measured on the reconciled days to allocate its residual over:"
                             " kept as its own row")
            residual_rows.append(_residual_row(by, provider, residual))
    out_rows = sorted(rows.values(), key=lambda r: (-(_total(r) or 0), r[by]))
    for row in out_rows:
        row["total_nano_usd"] = _total(row)
    total = _sum_rows([*out_rows, *residual_rows])
    for row in [*out_rows, *residual_rows]:
        row["share"] = ratio(row["total_nano_usd"], total["total_nano_usd"]) if row["total_nano_usd"] is not None \
            else None
        row["total_usd"] = None if row["total_nano_usd"] is None else str(usd(row["total_nano_usd"]))
    providers = sorted({c.provider for c in cells if c.provider} | set(coverage))
    invoice = _invoice(providers, coverage, residuals, days, period, bool(where))
    data: dict[str, Any] = {
        "ledger": ledger.path,
        "period": period.describe(),
        "month": month,
        "by": by,
        "allocate": allocate,
        "where": {k: v for k, v in where},
        "cost_centres": centres.path if centres else None,
        "rows": [*out_rows, *residual_rows],
        "total": total,
        "invoice": invoice,
        "notes": notes,
    }
    if lines:
        data["lines"] = _lines(cells, billed, coverage, [r["provider"] for r in residual_rows], centres)
    return data


# --- the ledger's side ---------------------------------------------------------------------------------
def _cells(conn: sqlite3.Connection, period: Period, where: Where, fields: Iterable[str]) -> list[_Cell]:
    """The ledger's lines, keyed by ``fields`` (of team, feature, tenant, model), provider and day."""
    fields = set(fields)
    exprs = {f: expr if f in fields else "NULL" for f, expr in (
        ("team", "team"), ("feature", "feature"), ("tenant", "tenant"),
        ("model", "COALESCE(response_model, request_model)"))}
    key_exprs = [part.format(**exprs) for part in _KEY]
    key = ", ".join(key_exprs)
    cond, params = selection(period, where)
    cells: dict[tuple, _Cell] = {}
    epoch = date(1970, 1, 1).toordinal()
    days: dict[int, str] = {}
    for row in conn.execute(_CELLS.format(key=key, cond=cond), params):
        k = tuple(row[:6])
        day = days.get(k[5]) or days.setdefault(k[5], date.fromordinal(epoch + k[5]).isoformat())
        cells[k] = _Cell(*k[:5], day, calls=row[6], tokens={t: int(v or 0) for t, v in zip(_TOKENS, row[7:11])},
                         cost=row[11] if row[12] else None, no_cost=dict.fromkeys(NO_COST_FIELDS, 0))
    for row in conn.execute(_NO_COST.format(key=key, kind=NO_COST_KIND, cond=cond), params):
        cells[tuple(row[:6])].no_cost[f"{row[6]}_calls"] = row[7]
    for k, delta in adjustments.sums(conn, key_exprs, period, where).items():
        if k in cells:
            cells[k].adjustment = delta
    return list(cells.values())


def _owner_of(by: str, centres: CostCentres | None):
    if by == "cost_centre":
        return lambda c: centres.of(c.team, c.feature, c.tenant)
    return lambda c: label(by, getattr(c, by))


def _owner_rows(cells: Iterable[_Cell], owner, by: str, centres: CostCentres | None) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for c in cells:
        key = owner(c)
        row = rows.setdefault(key, {by: key, "kind": "owner", "calls": 0, **dict.fromkeys(_TOKENS, 0),
                                    "cost_nano_usd": None, "adjustment_nano_usd": 0, "net_cost_nano_usd": None,
                                    "residual_nano_usd": 0, **dict.fromkeys(NO_COST_FIELDS, 0)})
        row["calls"] += c.calls
        for t in _TOKENS:
            row[t] += c.tokens[t]
        for f in NO_COST_FIELDS:
            row[f] += c.no_cost[f]
        if c.cost is not None:
            row["cost_nano_usd"] = (row["cost_nano_usd"] or 0) + c.cost
        row["adjustment_nano_usd"] += c.adjustment
        if c.net is not None:
            row["net_cost_nano_usd"] = (row["net_cost_nano_usd"] or 0) + c.net
        if by == "cost_centre":
            row.setdefault("owners", set()).add((label("team", c.team), label("feature", c.feature),
                                                 label("tenant", c.tenant)))
    for row in rows.values():
        if "owners" in row:
            row["owners"] = [dict(zip(("team", "feature", "tenant"), o)) for o in sorted(row["owners"])]
    return rows


def _total(row: dict) -> int | None:
    if row["net_cost_nano_usd"] is None and not row["residual_nano_usd"]:
        return None  # nothing priced and nothing allocated: no cost, never $0
    return (row["net_cost_nano_usd"] or 0) + row["residual_nano_usd"]


def _residual_row(by: str, provider: str, residual: int) -> dict:
    return {by: f"(unexplained: {provider})", "kind": "residual", "provider": provider, "calls": 0,
            **dict.fromkeys(_TOKENS, 0), "cost_nano_usd": None, "adjustment_nano_usd": 0, "net_cost_nano_usd": None,
            "residual_nano_usd": residual, "total_nano_usd": residual, **dict.fromkeys(NO_COST_FIELDS, 0)}


def _sum_rows(rows: Sequence[dict]) -> dict:
    total: dict[str, Any] = {k: sum(r[k] for r in rows) for k in ("calls", *_TOKENS, *NO_COST_FIELDS,
                                                                  "adjustment_nano_usd", "residual_nano_usd")}
    for k in ("cost_nano_usd", "net_cost_nano_usd", "total_nano_usd"):
        known = [r[k] for r in rows if r[k] is not None]
        total[k] = sum(known) if known else (0 if not total["calls"] else None)
    total["total_usd"] = None if total["total_nano_usd"] is None else str(usd(total["total_nano_usd"]))
    return total


# --- the provider's side: stored reconciliations -----------------------------------------------------------
def _whole_days(period: Period) -> list[str]:
    """The UTC days lying wholly inside the period (a reconciliation's residual is known per whole day)."""
    first = -(-period.since_ns // _DAY_NS)
    last = period.until_ns // _DAY_NS
    start = date(1970, 1, 1)
    return [(start + timedelta(days=d)).isoformat() for d in range(first, last)]


def _coverage(conn: sqlite3.Connection, days: list[str], notes: list[str]) -> dict[str, _Coverage]:
    """Per provider, the provider's cost per reconciled day: each day from the newest run by day covering it."""
    if not days:
        return {}
    try:
        runs = conn.execute(
            "SELECT id, provider, since_day, until_day, grain, result_json FROM reconciliations"
            " WHERE until_day > ? AND since_day <= ? ORDER BY created_ns DESC, id DESC", (days[0], days[-1])).fetchall()
    except sqlite3.OperationalError:  # a ledger older than v4 opened read-only: no runs yet
        return {}
    wanted = set(days)
    out: dict[str, _Coverage] = {}
    for run_id, provider, since_day, until_day, grain, result_json in runs:
        if "day" not in grain.split(","):
            notes.append(f"reconciliation #{run_id} ({provider}, --by {grain}) is not per day: not used (reconcile"
                         " with day in --by, the default)")
            continue
        per_day: dict[str, int] = {}
        for cell in json.loads(result_json)["cells"]:
            if cell.get("day") in wanted:
                per_day[cell["day"]] = per_day.get(cell["day"], 0) + int(cell["provider"]["cost_nano"])
        cov = out.setdefault(provider, _Coverage(provider))
        claimed = False
        for day in days:
            if since_day <= day < until_day and day not in cov.invoice:
                cov.invoice[day] = per_day.get(day, 0)  # a day the provider billed nothing is $0 on its bill
                claimed = True
        if claimed:
            cov.runs.append(run_id)
    return {p: c for p, c in out.items() if c.invoice}


def _reconciled(cells: Sequence[_Cell], owner, coverage: dict[str, _Coverage]) -> dict[str, dict[str, list[_Cell]]]:
    """Per reconciled provider, per owner: its lines with a cost on the provider's reconciled days."""
    out: dict[str, dict[str, list[_Cell]]] = {p: {} for p in coverage}
    for c in cells:
        cov = coverage.get(c.provider or "")
        if cov is not None and c.day in cov.invoice and c.net is not None:
            out[cov.provider].setdefault(owner(c), []).append(c)
    return out


def _invoice(providers: Sequence[str], coverage: dict[str, _Coverage], residuals: dict[str, int],
             days: list[str], period: Period, filtered: bool) -> dict:
    """Per provider: reconciled (every day of the period), partial or none; whether the total is the invoice."""
    aligned = period.since_ns % _DAY_NS == 0 and period.until_ns % _DAY_NS == 0
    entries = []
    for provider in providers:
        cov = coverage.get(provider)
        status = cov.status(days) if cov else "none"
        if status == "reconciled" and not aligned:
            status = "partial"  # the period's first or last day is cut: no invoice figure for part of a day
        entry: dict[str, Any] = {"provider": provider, "status": status, "period_days": len(days),
                                 "reconciled_days": len(cov.invoice) if cov else 0}
        if cov:
            claimed = sorted(cov.invoice)
            entry.update(first_day=claimed[0], last_day=claimed[-1], runs=cov.runs,
                         invoice_nano_usd=sum(cov.invoice.values()),
                         measured_nano_usd=sum(cov.invoice.values()) - residuals[provider],
                         residual_nano_usd=residuals[provider])
        entries.append(entry)
    matched = not filtered and bool(entries) and all(e["status"] == "reconciled" for e in entries)
    return {"matched": matched, "whole_days": aligned, "providers": entries}


def _lines(cells: Sequence[_Cell], billed: dict[str, dict[str, list[_Cell]]], coverage: dict[str, _Coverage],
           kept: Iterable[str], centres: CostCentres | None) -> dict:
    """The FOCUS grain: a usage line per day x provider x model x owner with a cost, a residual line per
    provider x reconciled day when the residual is kept apart; calls without any cost are only counted."""
    usage, left_out = [], 0
    for c in sorted(cells, key=lambda c: (c.day, c.provider or "", c.model or "", c.team or "", c.feature or "",
                                         c.tenant or "")):
        if c.net is None:
            left_out += c.calls
            continue
        usage.append({"day": c.day, "provider": c.provider, "model": c.model, "team": c.team, "feature": c.feature,
                      "tenant": c.tenant, "cost_centre": centres.of(c.team, c.feature, c.tenant) if centres else None,
                      "calls": c.calls, **c.tokens, "list_nano_usd": c.cost if c.cost is not None else c.net,
                      "net_nano_usd": c.net, "billed_nano_usd": c.net + c.allocated})
    residual = []
    for provider in sorted(kept):
        measured: dict[str, int] = {}
        for group in billed[provider].values():
            for c in group:
                measured[c.day] = measured.get(c.day, 0) + c.net
        for day, invoiced in sorted(coverage[provider].invoice.items()):
            if invoiced != measured.get(day, 0):
                residual.append({"day": day, "provider": provider, "residual_nano_usd": invoiced - measured.get(day, 0)})
    return {"usage": usage, "residual": residual, "calls_without_cost": left_out}
