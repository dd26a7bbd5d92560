"""Read side of the ledger: the questions the CLI answers, as plain data (dicts and lists).

Money is summed as integer nano-USD in SQLite and Python: a report total equals the sum of
the per-span costs exactly. Rendering (tables, CSV, JSON) lives in ``tokentrail.cli``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import statistics
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Iterable, Sequence

from tokentrail.errors import BudgetExceeded
from tokentrail.ledger.schema import LedgerError, connect

NANO = 10**9
UNATTRIBUTED = "(unattributed)"
UNKNOWN = "(unknown)"

#: ``--by`` / ``--where`` field -> SQL expression over the spans table.
FIELDS: dict[str, str] = {
    "tenant": "tenant",
    "feature": "feature",
    "team": "team",
    "user": "user_id",
    "task": "task_name",
    "provider": "provider",
    "model": "COALESCE(request_model, response_model)",
    "day": "date(start_ns / 1000000000, 'unixepoch')",
    "service": "service",
    "operation": "operation",
    "status": "cost_status",
}
#: Owner fields: a missing value is unattributed spend (shown, never hidden).
OWNER_FIELDS = ("tenant", "feature", "team", "user", "task")

# What makes a trace or task expensive (see ``explain``).
LONG_PROMPT_TOKENS = 8000
LONG_OUTPUT_TOKENS = 2000
LOW_CACHE_HIT_RATIO = 0.2
MANY_CALLS = 10
RUNAWAY_FACTOR = 3.0
#: error.type of an LLM call a circuit breaker stopped before sending (its task's outcome is
#: budget_exceeded; the ledger keeps no task-outcome column, so this is how it knows).
STOPPED_ERROR_TYPE = BudgetExceeded.__name__


_POOL: Any = None


def _pool() -> Any:
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokentrail-ledger-query")
    return _POOL


class LedgerNotFound(LedgerError):
    pass


class QueryError(LedgerError):
    """Bad user input: period, field, trace id."""


def usd(nano: int | None) -> Decimal | None:
    return None if nano is None else Decimal(nano) / NANO


# --- periods ---------------------------------------------------------------------------------
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now_ns: int) -> int:
    """``7d``/``24h``/``30m``/``2w`` ago, ``now``, a date (``2026-11-01``, UTC midnight) or an ISO time."""
    value = text.strip().lower()
    if value == "now":
        return now_ns
    match = _RELATIVE.match(value)
    if match:
        return now_ns - int(match.group(1)) * _UNIT_S[match.group(2)] * NANO
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        else:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
    except ValueError:
        raise QueryError(f"bad period {text!r}: use a duration like 7d, 24h, 30m, or a date like 2026-11-01") from None
    return int(moment.timestamp()) * NANO + moment.microsecond * 1000


def iso(ns: int | None) -> str | None:
    """Epoch nanoseconds as an ISO-8601 UTC time (seconds)."""
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / NANO, tz=timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Period:
    since_ns: int | None
    until_ns: int

    @classmethod
    def parse(cls, since: str | None, until: str | None, now_ns: int | None = None) -> "Period":
        now_ns = time.time_ns() if now_ns is None else now_ns
        until_ns = parse_time(until, now_ns) if until else now_ns + 1  # +1: include spans stamped "now"
        since_ns = parse_time(since, now_ns) if since else None
        if since_ns is not None and since_ns >= until_ns:
            raise QueryError(f"bad period: --since {since} is not before --until {until or 'now'}")
        return cls(since_ns, until_ns)

    def previous(self) -> "Period | None":
        if self.since_ns is None:
            return None
        return Period(self.since_ns - (self.until_ns - self.since_ns), self.since_ns)

    def sql(self) -> tuple[str, list[int]]:
        if self.since_ns is None:
            return "start_ns < ?", [self.until_ns]
        return "start_ns >= ? AND start_ns < ?", [self.since_ns, self.until_ns]

    def describe(self) -> dict[str, str | None]:
        return {"since": iso(self.since_ns), "until": iso(self.until_ns)}


def check_fields(names: Iterable[str]) -> list[str]:
    out = []
    for name in names:
        name = name.strip().lower()
        if not name:
            continue
        if name not in FIELDS:
            raise QueryError(f"unknown group-by field {name!r}: choose from {', '.join(FIELDS)}")
        out.append(name)
    return out


def parse_where(items: Sequence[str] | None) -> list[tuple[str, str | None]]:
    """``tenant=acme`` pairs; an empty value (``tenant=``) selects unattributed rows."""
    out = []
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise QueryError(f"bad --where {item!r}: use field=value, e.g. tenant=acme")
        (key,) = check_fields([key]) or [""]
        if not key:
            raise QueryError(f"bad --where {item!r}: use field=value, e.g. tenant=acme")
        value = value.strip()
        out.append((key, None if value in ("", UNATTRIBUTED, UNKNOWN) else value))
    return out


def _where_sql(where: Sequence[tuple[str, str | None]]) -> tuple[str, list[Any]]:
    clauses, params = [], []
    for key, value in where:
        if value is None:
            clauses.append(f"{FIELDS[key]} IS NULL")
        else:
            clauses.append(f"{FIELDS[key]} = ?")
            params.append(value)
    return "".join(f" AND {c}" for c in clauses), params


def label(field: str, value: Any) -> str:
    if value is None or value == "":
        return UNATTRIBUTED if field in OWNER_FIELDS else UNKNOWN
    return str(value)


def ratio(part: int | None, whole: int | None) -> float | None:
    if not whole:
        return None
    return (part or 0) / whole


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(1, -(-int(q * 1000) * len(sorted_values) // 1000))  # ceil(q * n)
    return sorted_values[min(rank, len(sorted_values)) - 1]


# --- what made it expensive ------------------------------------------------------------------
def explain(agg: dict[str, Any], *, median_cost_nano: int | None = None, median_of: str | None = None) -> list[str]:
    """Short human reasons, most telling first, from one trace's or task's aggregates."""
    reasons: list[str] = []
    cost = agg.get("cost_nano_usd") or 0
    stopped = agg.get("stopped_calls")
    if stopped:
        reasons.append(f"stopped by a budget breaker ({stopped} call{'s' if stopped > 1 else ''} not sent)")
    if median_cost_nano and cost >= RUNAWAY_FACTOR * median_cost_nano:
        reasons.append(f"{cost / median_cost_nano:.1f}x the median {median_of or 'task'}")
    if agg.get("retries"):
        reasons.append(f"{agg['retries']} retries")
    if agg.get("fallback_from"):
        reasons.append(f"fallback {agg['fallback_from']} -> {agg.get('fallback_to') or '?'}")
    if (agg.get("max_input_tokens") or 0) >= LONG_PROMPT_TOKENS:
        reasons.append(f"long prompt ({agg['max_input_tokens']:,} input tokens)")
    hit = ratio(agg.get("cache_read_tokens"), agg.get("input_tokens"))
    input_cost_share = ratio(agg.get("cost_input_nano"), cost)
    if hit is not None and hit < LOW_CACHE_HIT_RATIO and (input_cost_share or 0) >= 0.5:
        reasons.append(f"low cache hits ({hit:.0%})")
    output_share = ratio(agg.get("cost_output_nano"), cost)
    if (agg.get("max_output_tokens") or 0) >= LONG_OUTPUT_TOKENS or (
        (output_share or 0) >= 0.6 and (agg.get("max_output_tokens") or 0) >= 1000
    ):
        reasons.append(f"long output ({agg['max_output_tokens']:,} output tokens)")
    if (agg.get("calls") or 0) >= MANY_CALLS:
        reasons.append(f"{agg['calls']} calls")
    return reasons


_AGG = f"""COUNT(*), SUM(cost_nano), SUM(input_tokens), SUM(cache_read_tokens), SUM(output_tokens),
 MAX(input_tokens), MAX(output_tokens), SUM(cost_input_nano), SUM(cost_output_nano),
 SUM(CASE WHEN retry_attempt > 0 THEN 1 ELSE 0 END), MAX(fallback_from),
 MAX(tenant), MAX(feature), MAX(team), MAX(user_id), MAX(task_name), MIN(start_ns),
 SUM(CASE WHEN cost_nano IS NULL THEN 1 ELSE 0 END),
 SUM(CASE WHEN error_type = '{STOPPED_ERROR_TYPE}' THEN 1 ELSE 0 END)"""
_AGG_KEYS = (
    "calls", "cost_nano_usd", "input_tokens", "cache_read_tokens", "output_tokens",
    "max_input_tokens", "max_output_tokens", "cost_input_nano", "cost_output_nano",
    "retries", "fallback_from", "tenant", "feature", "team", "user", "task", "start_ns", "unpriced_calls",
    "stopped_calls",
)


class Ledger:
    """A ledger opened for queries (migrated if it is older; refused if it is newer)."""

    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            raise LedgerNotFound(
                f"no ledger at {path}: run `tokentrail demo` to make one, or export spans with"
                " OTEL_TRACES_EXPORTER=tokentrail_ledger (path from TOKENTRAIL_LEDGER)"
            )
        try:
            self.conn = connect(path)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc}") from None
        self.path = path

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- report ------------------------------------------------------------------------------
    def _grouped(
        self, by: Sequence[str], period: Period, where: Sequence[tuple[str, str | None]]
    ) -> tuple[dict[tuple, dict], dict[tuple, int] | None]:
        """Aggregates per group for the period, and cost per group for the previous equal period.

        The two periods are aggregated at the same time on two connections (SQLite releases the
        GIL while it scans): a report costs about one period's scan of the covering index.
        """
        exprs = [FIELDS[f] for f in by]
        where_sql, where_params = _where_sql(where)
        select = "".join(f"{e}, " for e in exprs)
        group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(exprs)))}" if exprs else ""
        if self._owner_index_fits(by, period, where):
            return self._grouped_by_owner(select, group, len(exprs), period, where_sql, where_params)
        period_sql, params = period.sql()
        sql = (
            f"SELECT {select}COUNT(*), SUM(input_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens),"
            " SUM(output_tokens), SUM(cost_nano), COUNT(cost_nano)"
            f" FROM spans WHERE llm = 1 AND {period_sql}{where_sql}{group}"
        )
        previous = period.previous()
        before_future = None
        if previous is not None:
            prev_sql, prev_params = previous.sql()
            before_future = _pool().submit(
                self._side_query,
                f"SELECT {select}SUM(cost_nano) FROM spans WHERE llm = 1 AND {prev_sql}{where_sql}{group}",
                prev_params + where_params,
            )
        out: dict[tuple, dict] = {}
        for row in self.conn.execute(sql, params + where_params):
            key = tuple(row[: len(exprs)])
            calls, inp, cread, cwrite, outp, cost, priced = row[len(exprs):]
            if not calls:
                continue
            out[key] = {
                "calls": calls,
                "input_tokens": inp or 0,
                "cache_read_tokens": cread or 0,
                "cache_write_tokens": cwrite or 0,
                "output_tokens": outp or 0,
                "cost_nano_usd": cost or 0,
                "unpriced_calls": calls - priced,
            }
        before = None
        if before_future is not None:
            before = {tuple(r[: len(exprs)]): r[-1] for r in before_future.result() if r[-1]}
        return out, before

    def _owner_index_fits(self, by: Sequence[str], period: Period, where: Sequence[tuple[str, str | None]]) -> bool:
        """Whether the owner index answers this report better than the time index.

        It does when the report groups by tenant (and feature), filters on nothing else, and the
        periods asked for cover a good part of the ledger: one pass in group order, no sort.
        """
        if list(by) not in (["tenant"], ["tenant", "feature"]) or any(k not in ("tenant", "feature") for k, _ in where):
            return False
        lo, hi = self.conn.execute("SELECT MIN(start_ns), MAX(start_ns) FROM spans WHERE llm = 1").fetchone()
        if lo is None:
            return False
        previous = period.previous()
        start = (previous or period).since_ns
        covered = min(hi + 1, period.until_ns) - max(lo, start if start is not None else lo)
        return covered * 10 >= (hi + 1 - lo) * 3

    def _grouped_by_owner(self, select: str, group: str, n: int, period: Period, where_sql: str,
                          where_params: list) -> tuple[dict[tuple, dict], dict[tuple, int] | None]:
        previous = period.previous()
        if previous is None:
            period_sql, params = period.sql()
            cur, end, prev_cost = "", "", "NULL"
        else:
            period_sql, params = Period(previous.since_ns, period.until_ns).sql()
            cur, end = f"CASE WHEN start_ns >= {int(period.since_ns)} THEN ", " END"
            prev_cost = f"SUM(CASE WHEN start_ns < {int(period.since_ns)} THEN cost_nano END)"
        sql = (
            f"SELECT {select}COUNT({cur}1{end}), SUM({cur}input_tokens{end}), SUM({cur}cache_read_tokens{end}),"
            f" SUM({cur}cache_write_tokens{end}), SUM({cur}output_tokens{end}), SUM({cur}cost_nano{end}),"
            f" COUNT({cur}cost_nano{end}), {prev_cost}"
            f" FROM spans INDEXED BY spans_owner WHERE llm = 1 AND {period_sql}{where_sql}{group}"
        )
        out: dict[tuple, dict] = {}
        before: dict[tuple, int] | None = None if previous is None else {}
        for row in self.conn.execute(sql, params + where_params):
            key = tuple(row[:n])
            calls, inp, cread, cwrite, outp, cost, priced, prev = row[n:]
            if before is not None and prev:
                before[key] = prev
            if calls:
                out[key] = {
                    "calls": calls,
                    "input_tokens": inp or 0,
                    "cache_read_tokens": cread or 0,
                    "cache_write_tokens": cwrite or 0,
                    "output_tokens": outp or 0,
                    "cost_nano_usd": cost or 0,
                    "unpriced_calls": calls - priced,
                }
        return out, before

    def _side_query(self, sql: str, params: list) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def report(self, by: Sequence[str], period: Period, where: Sequence[tuple[str, str | None]] = ()) -> dict:
        by = check_fields(by)
        current, previous = self._grouped(by, period, where)
        previous_period = period.previous()
        total_nano = sum(r["cost_nano_usd"] for r in current.values())
        rows = []
        for key, agg in current.items():
            row: dict[str, Any] = {f: label(f, v) for f, v in zip(by, key)}
            row.update(agg)
            row["cache_hit_ratio"] = ratio(agg["cache_read_tokens"], agg["input_tokens"])
            row["cost_usd"] = str(usd(agg["cost_nano_usd"]))
            row["share"] = ratio(agg["cost_nano_usd"], total_nano)
            if previous is not None:
                before = previous.get(key, 0)
                row["previous_cost_nano_usd"] = before
                row["change"] = None if not before else (agg["cost_nano_usd"] - before) / before
            rows.append(row)
        rows.sort(key=lambda r: (-r["cost_nano_usd"], -r["calls"], [r[f] for f in by]))
        if by and by[0] == "day":  # a time series reads in time order (costliest first within a day)
            rows.sort(key=lambda r: r["day"])
        totals = {
            k: sum(r[k] for r in rows)
            for k in ("calls", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens",
                      "cost_nano_usd", "unpriced_calls")
        }
        totals["cache_hit_ratio"] = ratio(totals["cache_read_tokens"], totals["input_tokens"])
        totals["cost_usd"] = str(usd(totals["cost_nano_usd"]))
        if previous is not None:
            before = sum(previous.values())
            totals["previous_cost_nano_usd"] = before
            totals["change"] = None if not before else (total_nano - before) / before
        unattributed = sum(r["cost_nano_usd"] for r in rows if r.get("tenant") == UNATTRIBUTED) if "tenant" in by else None
        if unattributed is None:
            unattributed = self._unattributed_nano(period, where)
        totals["unattributed_cost_nano_usd"] = unattributed
        totals["no_cost_calls_by_status"] = self._no_cost_statuses(period, where) if totals["unpriced_calls"] else {}
        totals["unattributed_share"] = ratio(unattributed, total_nano)
        return {
            "ledger": self.path,
            "group_by": list(by),
            "period": period.describe(),
            "compared_with": previous_period.describe() if previous_period else None,
            "where": {k: v for k, v in where},
            "rows": rows,
            "total": totals,
        }

    def _no_cost_statuses(self, period: Period, where: Sequence[tuple[str, str | None]]) -> dict[str, int]:
        """Why calls have no cost: ``no_usage`` (failed / no usage reported) or ``unpriced``."""
        period_sql, params = period.sql()
        where_sql, where_params = _where_sql(where)
        rows = self.conn.execute(
            f"SELECT COALESCE(cost_status, 'unknown'), COUNT(*) FROM spans WHERE llm = 1 AND {period_sql}{where_sql}"
            " AND cost_nano IS NULL GROUP BY 1",
            params + where_params,
        )
        return dict(rows.fetchall())

    def _unattributed_nano(self, period: Period, where: Sequence[tuple[str, str | None]]) -> int:
        period_sql, params = period.sql()
        where_sql, where_params = _where_sql(where)
        (value,) = self.conn.execute(
            f"SELECT SUM(cost_nano) FROM spans WHERE llm = 1 AND {period_sql}{where_sql} AND tenant IS NULL",
            params + where_params,
        ).fetchone()
        return value or 0

    # --- top ---------------------------------------------------------------------------------
    def _aggregates(self, key_sql: str, period: Period, where, extra: str = "", limit: int | None = None) -> list[dict]:
        period_sql, params = period.sql()
        where_sql, where_params = _where_sql(where)
        sql = (
            f"SELECT {key_sql}, {_AGG} FROM spans WHERE llm = 1 AND {period_sql}{where_sql}{extra}"
            f" GROUP BY 1 ORDER BY 3 DESC" + (f" LIMIT {int(limit)}" if limit else "")
        )
        out = []
        for row in self.conn.execute(sql, params + where_params):
            agg = dict(zip(("key", *_AGG_KEYS), row))
            for k in ("cost_nano_usd", "input_tokens", "cache_read_tokens", "output_tokens", "cost_input_nano",
                      "cost_output_nano", "max_input_tokens", "max_output_tokens"):
                agg[k] = agg[k] or 0
            out.append(agg)
        return out

    def _fallback_to(self, column: str, key: str) -> str | None:
        row = self.conn.execute(
            f"SELECT COALESCE(request_model, response_model) FROM spans WHERE {column} = ? AND llm = 1"
            " AND fallback_from IS NOT NULL LIMIT 1",
            (key,),
        ).fetchone()
        return row[0] if row else None

    def _finish(self, agg: dict, **explain_args: Any) -> dict:
        out = {
            "cost_nano_usd": agg["cost_nano_usd"],
            "cost_usd": str(usd(agg["cost_nano_usd"])),
            "calls": agg["calls"],
            "owner": {k: agg[k] for k in ("tenant", "feature", "team", "user", "task") if agg.get(k)},
            "input_tokens": agg["input_tokens"],
            "cache_read_tokens": agg["cache_read_tokens"],
            "output_tokens": agg["output_tokens"],
            "cache_hit_ratio": ratio(agg["cache_read_tokens"], agg["input_tokens"]),
            "retries": agg["retries"] or 0,
            "unpriced_calls": agg["unpriced_calls"] or 0,
            "stopped_calls": agg["stopped_calls"] or 0,  # stopped by a breaker before sending (never billed)
            "started": iso(agg["start_ns"]),
            "reasons": explain(agg, **explain_args),
        }
        if agg.get("fallback_from"):
            out["fallback"] = {"from": agg["fallback_from"], "to": agg.get("fallback_to")}
        return out

    def top(self, period: Period, where=(), limit: int = 10) -> dict:
        tasks_all = self._aggregates("task_id", period, where, extra=" AND task_id IS NOT NULL")
        costs_by_name: dict[str, list[int]] = {}
        for agg in tasks_all:
            costs_by_name.setdefault(agg["task"] or "", []).append(agg["cost_nano_usd"])
        medians = {name: int(statistics.median(costs)) for name, costs in costs_by_name.items()}
        traces = []
        for agg in self._aggregates("trace_id", period, where, limit=limit):
            if agg["fallback_from"]:
                agg["fallback_to"] = self._fallback_to("trace_id", agg["key"])
            root = self.conn.execute(
                "SELECT name FROM spans WHERE trace_id = ? ORDER BY parent_span_id IS NOT NULL, start_ns LIMIT 1",
                (agg["key"],),
            ).fetchone()
            # a trace that is one task run: judge it against the other runs of that task
            task_name = self.conn.execute(
                "SELECT MAX(task_name), COUNT(DISTINCT task_id) FROM spans WHERE trace_id = ? AND llm = 1"
                " AND task_id IS NOT NULL",
                (agg["key"],),
            ).fetchone()
            explain_args = {}
            if task_name[1] == 1 and len(costs_by_name.get(task_name[0] or "", ())) > 2:
                explain_args = {"median_cost_nano": medians.get(task_name[0] or ""), "median_of": task_name[0]}
            item = {"trace_id": agg["key"], "root": root[0] if root else None}
            item.update(self._finish(agg, **explain_args))
            traces.append(item)
        tasks = []
        for agg in tasks_all[:limit]:
            if agg["fallback_from"]:
                agg["fallback_to"] = self._fallback_to("task_id", agg["key"])
            name = agg["task"] or ""
            item = {"task_id": agg["key"], "task": name or None}
            item.update(self._finish(agg, median_cost_nano=medians.get(name), median_of=name or "task"))
            # the one task outcome the LLM rows prove (ok/error live on the task span only)
            item["outcome"] = "budget_exceeded" if item["stopped_calls"] else None
            item["median_task_cost_nano_usd"] = medians.get(name)
            item["tasks_of_this_name"] = len(costs_by_name.get(name, ()))
            tasks.append(item)
        return {"ledger": self.path, "period": period.describe(), "traces": traces, "tasks": tasks}

    # --- trace -------------------------------------------------------------------------------
    def find_trace(self, prefix: str) -> str:
        wanted = prefix.strip().lower()
        if not wanted or not re.fullmatch(r"[0-9a-f]{1,32}", wanted):
            raise QueryError(f"bad trace id {prefix!r}: give the hex trace id or a unique prefix of it")
        matches = [
            r[0]
            for r in self.conn.execute(
                "SELECT DISTINCT trace_id FROM spans WHERE trace_id >= ? AND trace_id < ? LIMIT 2",
                (wanted, wanted + "g"),  # 'g' sorts after every hex digit: a prefix range on the index
            )
        ]
        if not matches:
            raise QueryError(f"unknown trace id {prefix!r}: no trace in {self.path} starts with it (see `tokentrail top`)")
        if len(matches) > 1:
            raise QueryError(f"trace id prefix {prefix!r} matches several traces: give more characters")
        return matches[0]

    def trace(self, prefix: str) -> dict:
        trace_id = self.find_trace(prefix)
        cols = ("span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "status", "service", "llm",
                "provider", "request_model", "response_model", "input_tokens", "cache_read_tokens",
                "cache_write_tokens", "output_tokens", "reasoning_tokens", "cost_status", "cost_nano", "tenant",
                "feature", "team", "user_id", "task_name", "task_id", "retry_attempt", "fallback_from", "error_type",
                "rate_card_version", "pricing_tier")
        spans = [
            dict(zip(cols, row))
            for row in self.conn.execute(
                f"SELECT {', '.join(cols)} FROM spans WHERE trace_id = ? ORDER BY start_ns, id", (trace_id,)
            )
        ]
        ids = {s["span_id"] for s in spans}
        children: dict[str | None, list[dict]] = {}
        for s in spans:
            parent = s["parent_span_id"] if s["parent_span_id"] in ids else None
            children.setdefault(parent, []).append(s)

        def subtree(s: dict) -> int:
            s["subtree_cost_nano_usd"] = (s["cost_nano"] or 0) + sum(subtree(c) for c in children.get(s["span_id"], ()))
            return s["subtree_cost_nano_usd"]

        ordered: list[dict] = []

        def walk(s: dict, depth: int) -> None:
            s["depth"] = depth
            ordered.append(s)
            for c in children.get(s["span_id"], ()):
                walk(c, depth + 1)

        for root in children.get(None, ()):
            subtree(root)
            walk(root, 0)
        running = 0
        out_spans = []
        for s in ordered:
            running += s["cost_nano"] or 0
            model = s["response_model"] or s["request_model"]
            item = {
                "span_id": s["span_id"],
                "parent_span_id": s["parent_span_id"],
                "depth": s["depth"],
                "name": s["name"],
                "status": {0: "unset", 1: "ok", 2: "error"}.get(s["status"], s["status"]),
                "duration_ms": None if s["end_ns"] is None else (s["end_ns"] - s["start_ns"]) / 1e6,
                "llm": bool(s["llm"]),
                "subtree_cost_nano_usd": s["subtree_cost_nano_usd"],
                "cumulative_cost_nano_usd": running,
            }
            if s["llm"]:
                item.update(
                    provider=s["provider"],
                    request_model=s["request_model"],
                    model=model,
                    input_tokens=s["input_tokens"],
                    cache_read_tokens=s["cache_read_tokens"],
                    cache_write_tokens=s["cache_write_tokens"],
                    output_tokens=s["output_tokens"],
                    reasoning_tokens=s["reasoning_tokens"],
                    cache_hit_ratio=ratio(s["cache_read_tokens"], s["input_tokens"]),
                    cost_status=s["cost_status"],
                    cost_nano_usd=s["cost_nano"],
                    cost_usd=None if s["cost_nano"] is None else str(usd(s["cost_nano"])),
                    rate_card_version=s["rate_card_version"],
                    pricing_tier=s["pricing_tier"],
                    retry_attempt=s["retry_attempt"],
                    fallback_from=s["fallback_from"],
                    error_type=s["error_type"],
                )
            item["owner"] = {
                k: s[c]
                for k, c in (("tenant", "tenant"), ("feature", "feature"), ("team", "team"), ("user", "user_id"),
                             ("task", "task_name"), ("task_id", "task_id"))
                if s[c]
            }
            out_spans.append(item)
        llm = [s for s in spans if s["llm"]]
        total = sum(s["cost_nano"] or 0 for s in llm)
        owner: dict[str, str] = {}
        for s in out_spans:
            for k, v in s["owner"].items():
                owner.setdefault(k, v)
        return {
            "trace_id": trace_id,
            "spans": out_spans,
            "calls": len(llm),
            "owner": owner,
            "cost_nano_usd": total,
            "cost_usd": str(usd(total)),
        }

    # --- tenants -----------------------------------------------------------------------------
    def tenants(self, period: Period, where=()) -> list[dict]:
        """Per-tenant cache-hit dispersion and cost per request, most expensive per request first."""
        period_sql, params = period.sql()
        where_sql, where_params = _where_sql(where)
        per: dict[str | None, dict] = {}
        sql = (
            "SELECT tenant, input_tokens, cache_read_tokens, cost_nano, start_ns / 86400000000000"
            f" FROM spans WHERE llm = 1 AND {period_sql}{where_sql}"
        )
        for tenant, inp, cread, cost, day in self.conn.execute(sql, params + where_params):
            t = per.setdefault(tenant, {"calls": 0, "priced": 0, "cost": 0, "input": 0, "cread": 0, "ratios": [], "days": set()})
            t["calls"] += 1
            t["days"].add(day)
            if cost is not None:
                t["priced"] += 1
                t["cost"] += cost
            if inp:
                t["input"] += inp
                t["cread"] += cread or 0
                t["ratios"].append((cread or 0) / inp)
        rows = []
        for tenant, t in per.items():
            ratios = sorted(t["ratios"])
            per_request = t["cost"] // t["priced"] if t["priced"] else None
            per_day = t["cost"] // len(t["days"]) if t["days"] else None
            rows.append({
                "tenant": label("tenant", tenant),
                "calls": t["calls"],
                "cache_hit_median": statistics.median(ratios) if ratios else None,
                "cache_hit_p10": percentile(ratios, 0.10),
                "cache_hit_ratio": ratio(t["cread"], t["input"]),
                "cost_per_request_nano_usd": per_request,
                "cost_per_request_usd": None if per_request is None else str(usd(per_request)),
                "cost_per_active_day_nano_usd": per_day,
                "cost_nano_usd": t["cost"],
                "cost_usd": str(usd(t["cost"])),
            })
        rows.sort(key=lambda r: (-(r["cost_per_request_nano_usd"] or 0), r["cache_hit_median"] or 0, r["tenant"]))
        return rows
