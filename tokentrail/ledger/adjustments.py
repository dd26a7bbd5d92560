"""Re-pricing history without rewriting it: adjustment entries beside the original rows.

A re-price prices each call of a period again with another rate card and writes, for each call
whose cost changes, one ``adjustments`` row: the difference to its current net cost, the new
card's version and the reason, all in one batch. The span rows are never changed, so a report
shows original, adjustments and net (``cost_nano + SUM(delta_nano)``), and a batch is undone by
another batch of the opposite entries (``revert``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from tokentrail.ledger.queries.common import FIELDS, STOPPED_ERROR_TYPE, Period, Where, label, selection, where_sql
from tokentrail.ledger.schema import LedgerError
from tokentrail.semconv import attributes as attr

#: A call's adjustments so far (0 when none), and its current net cost: the original plus them.
DELTA = "COALESCE((SELECT SUM(delta_nano) FROM adjustments WHERE span_row = spans.id), 0)"
NET = f"COALESCE(spans.cost_nano, 0) + {DELTA}"


@dataclass
class Change:
    row: int
    owner: tuple
    net_nano: int | None  # before this re-price (None: never priced)
    new_nano: int | None  # None: the new card has no price either

    @property
    def delta(self) -> int:
        return (self.new_nano or 0) - (self.net_nano or 0)


@contextlib.contextmanager
def rate_card(path: str) -> Iterator[str]:
    """Price with the rate card at ``path`` (a ``TOKENTRAIL_RATE_CARD`` overlay) inside the block; its version."""
    from tokentrail.processor import pricing  # the rate card loads in a second: reports never need it

    before = os.environ.get(pricing.ENV_RATE_CARD)
    os.environ[pricing.ENV_RATE_CARD] = path
    try:
        card = pricing.reload()
        if card.user_error:
            raise LedgerError(f"cannot use rate card {card.user_error}")  # the error names the file
        yield card.version
    finally:
        if before is None:
            os.environ.pop(pricing.ENV_RATE_CARD, None)
        else:
            os.environ[pricing.ENV_RATE_CARD] = before
        pricing.reload()


_ROW = ("id", "start_ns", "provider", "operation", "request_model", "response_model", "pricing_tier",
        "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens",
        "reasoning_tokens", "cost_nano", "cost_fees_nano")
_USAGE = {
    "input_tokens": attr.GEN_AI_USAGE_INPUT_TOKENS,
    "output_tokens": attr.GEN_AI_USAGE_OUTPUT_TOKENS,
    "cache_read_tokens": attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    "cache_write_tokens": attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    "cache_write_1h_tokens": attr.TOKENTRAIL_USAGE_CACHE_WRITE_1H_INPUT_TOKENS,
    "reasoning_tokens": attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
}


def price_row(row: dict[str, Any]) -> int | None:
    """The row's cost under the current card, nano-USD (its fees kept: the ledger has no tool counts)."""
    from tokentrail.processor import pricing

    attributes: dict[str, Any] = {
        attr.GEN_AI_PROVIDER_NAME: row["provider"],
        attr.GEN_AI_OPERATION_NAME: row["operation"] or "chat",
        attr.GEN_AI_REQUEST_MODEL: row["request_model"],
        attr.GEN_AI_RESPONSE_MODEL: row["response_model"],
        attr.TOKENTRAIL_SERVICE_TIER: pricing.service_tier_of(row["pricing_tier"]),
    }
    attributes.update((name, row[column]) for column, name in _USAGE.items() if row[column] is not None)
    priced = pricing.price_span({k: v for k, v in attributes.items() if v is not None}, row["start_ns"])
    nano = priced.get(attr.TOKENTRAIL_COST_NANO_USD)
    return None if nano is None else nano + (row["cost_fees_nano"] or 0)


def plan(conn: sqlite3.Connection, period: Period, where: Where, by: Sequence[str],
         price: Callable[[dict[str, Any]], int | None] = price_row) -> list[Change]:
    """Every call of the period whose net cost the current card changes (calls with usage only)."""
    period_sql, params = period.sql()
    clauses, where_params = where_sql(where)
    owner = ", ".join(f"{FIELDS[f]} AS owner_{i}" for i, f in enumerate(by)) or "NULL"
    sql = (f"SELECT {', '.join('spans.' + c for c in _ROW)}, {NET} AS net, {owner} FROM spans"
           f" WHERE llm = 1 AND input_tokens IS NOT NULL AND (error_type IS NULL OR error_type != ?)"
           f" AND {period_sql.replace('start_ns', 'spans.start_ns')}{clauses}")
    changes = []
    for values in conn.execute(sql, [STOPPED_ERROR_TYPE, *params, *where_params]):
        row = dict(zip(_ROW, values))
        had_cost = row["cost_nano"] is not None or values[len(_ROW)] != 0
        net = values[len(_ROW)] if had_cost else None
        new = price(row)
        if new != net:
            changes.append(Change(row["id"], tuple(values[len(_ROW) + 1:]), net, new))
    return changes


def summary(changes: Sequence[Change], by: Sequence[str]) -> list[dict[str, Any]]:
    """Per owner: calls changed, net before, the adjustment and net after (nano-USD), largest change first."""
    groups: dict[tuple, dict[str, Any]] = {}
    for change in changes:
        key = tuple(label(f, v) for f, v in zip(by, change.owner))
        g = groups.setdefault(key, {**dict(zip(by, key)), "calls": 0, "before_nano": 0, "adjustment_nano": 0})
        g["calls"] += 1
        g["before_nano"] += change.net_nano or 0
        g["adjustment_nano"] += change.delta
    for g in groups.values():
        g["after_nano"] = g["before_nano"] + g["adjustment_nano"]
    return sorted(groups.values(), key=lambda g: (-abs(g["adjustment_nano"]), tuple(str(g[f]) for f in by)))


def apply(conn: sqlite3.Connection, changes: Sequence[tuple[int, int]], version: str, reason: str) -> str:
    """Write ``(span row, delta)`` entries as one batch, in one transaction; the batch id."""
    now = time.time_ns()
    batch = "rp-" + hashlib.sha256(f"{now}{version}{reason}{len(changes)}".encode()).hexdigest()[:10]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT INTO adjustments (span_row, batch, created_ns, delta_nano, rate_card_version, reason)"
            " VALUES (?, ?, ?, ?, ?, ?)", [(row, batch, now, delta, version, reason) for row, delta in changes if delta])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return batch


def revert(conn: sqlite3.Connection, batch: str) -> tuple[str, int]:
    """Undo a batch with the opposite entries (a new batch; the old one stays, for the audit)."""
    rows = conn.execute("SELECT span_row, -delta_nano, rate_card_version FROM adjustments WHERE batch = ?",
                        (batch,)).fetchall()
    if not rows:
        raise LedgerError(f"no adjustment batch {batch!r}: `tokentrail reprice --list` shows them")
    version = rows[0][2]
    return apply(conn, [(r[0], r[1]) for r in rows], version, f"revert {batch}"), len(rows)


def batches(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every batch, newest first: id, when, rate card, reason, entries and their sum."""
    rows = conn.execute(
        "SELECT batch, MIN(created_ns), rate_card_version, reason, COUNT(*), SUM(delta_nano) FROM adjustments"
        " GROUP BY batch ORDER BY MIN(created_ns) DESC, batch").fetchall()
    keys = ("batch", "created_ns", "rate_card_version", "reason", "entries", "delta_nano")
    return [dict(zip(keys, r)) for r in rows]


def sums(conn: sqlite3.Connection, exprs: Sequence[str], period: Period, where: Where, extra: str = "",
         params: Sequence[Any] = ()) -> dict[tuple, int]:
    """The adjustments of the period's LLM calls per group of ``exprs`` (SQL over spans); {} when none."""
    cond, cond_params = selection(period, where)
    group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(exprs)))}" if exprs else ""
    sql = (f"SELECT {''.join(f'{e}, ' for e in exprs)}SUM(delta_nano) FROM adjustments"
           f" JOIN spans ON spans.id = adjustments.span_row WHERE llm = 1 AND {cond}{extra}{group}")
    try:
        return {tuple(r[:-1]): r[-1] for r in conn.execute(sql, [*cond_params, *params]) if r[-1]}
    except sqlite3.OperationalError:  # no adjustments table: nothing was ever re-priced
        return {}


def add_net(item: dict, delta: int) -> None:
    """Original, adjustments and net on one row (``cost_nano_usd`` is the original): the one rule."""
    original = item["cost_nano_usd"]
    item["adjustment_nano_usd"] = delta
    # a call no card priced, not re-priced either, is still no cost: never $0
    item["net_cost_nano_usd"] = None if original is None and not delta else (original or 0) + delta


def add_to_report(conn: sqlite3.Connection, rows: list[dict], totals: dict, by: Sequence[str], period: Period,
                  where: Where) -> None:
    """Original, adjustments and net on a report's rows and total, when the period has adjustments."""
    found = sums(conn, [FIELDS[f] for f in by], period, where)
    if not found:
        return
    labelled = by_label(found, by)
    for row in rows:
        add_net(row, labelled.get(tuple(row[f] for f in by), 0))
    add_net(totals, sum(found.values()))


def by_label(found: dict[tuple, int], by: Sequence[str]) -> dict[tuple, int]:
    """``sums`` keyed as report rows show their fields (NULL and '' are one ``(no feature)`` row)."""
    out: dict[tuple, int] = {}
    for key, delta in found.items():
        name = tuple(label(f, v) for f, v in zip(by, key))
        out[name] = out.get(name, 0) + delta
    return out
