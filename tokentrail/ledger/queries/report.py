"""``report``: spend grouped by fields, with the change against the previous period of equal length.

Money is summed as integer nano-USD: a report total equals the sum of the per-span costs exactly.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Sequence

from tokentrail.ledger import adjustments
from tokentrail.ledger.queries.common import (
    FIELDS, NO_COST_FIELDS, NO_COST_KIND, UNATTRIBUTED, LedgerBase, Period, Where, check_fields, label,
    no_cost_counts, ratio, selection, usd,
)
from tokentrail.reconcile import store as reconciliations

# The previous period's side query; its one thread starts on the first report that compares.
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokentrail-ledger-query")

_TOKENS = ("calls", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")


def _group(calls: int, inp: int | None, cread: int | None, cwrite: int | None, outp: int | None,
           cost: int | None, priced: int) -> dict[str, Any]:
    return {
        "calls": calls,
        "input_tokens": inp or 0,
        "cache_read_tokens": cread or 0,
        "cache_write_tokens": cwrite or 0,
        "output_tokens": outp or 0,
        # None, not 0, when no call of the group could be priced: unknown spend is not free spend
        "cost_nano_usd": cost if priced else None,
        "priced_calls": priced,
    }


def _sum_cost(costs: Iterable[int | None]) -> int | None:
    known = [c for c in costs if c is not None]
    return sum(known) if known else None


def _usd_text(nano: int | None) -> str | None:
    return None if nano is None else str(usd(nano))


class ReportQuery(LedgerBase):
    def report(self, by: Sequence[str], period: Period, where: Where = ()) -> dict:
        by = check_fields(by)
        current, previous = self._grouped(by, period, where)
        previous_period = period.previous()
        kinds = self._no_cost_kinds(by, period, where) if any(
            g["calls"] > g["priced_calls"] for g in current.values()) else {}
        total_nano = _sum_cost(r["cost_nano_usd"] for r in current.values())
        rows = []
        for key, agg in current.items():
            row: dict[str, Any] = {f: label(f, v) for f, v in zip(by, key)}
            row.update(agg)
            row.update(no_cost_counts(kinds.get(key)))
            row["cache_hit_ratio"] = ratio(agg["cache_read_tokens"], agg["input_tokens"])
            row["cost_usd"] = _usd_text(agg["cost_nano_usd"])
            row["share"] = None if agg["cost_nano_usd"] is None else ratio(agg["cost_nano_usd"], total_nano)
            if previous is not None and "day" not in by:  # a day never recurs in the previous period
                before = previous.get(key, 0)
                row["previous_cost_nano_usd"] = before
                row["change"] = None if not before or agg["cost_nano_usd"] is None else (
                    (agg["cost_nano_usd"] - before) / before)
            rows.append(row)
        rows.sort(key=lambda r: (-(r["cost_nano_usd"] if r["cost_nano_usd"] is not None else -1), -r["calls"],
                                 [r[f] for f in by]))
        if by and by[0] == "day":  # a time series reads in time order (costliest first within a day)
            rows.sort(key=lambda r: r["day"])
        totals: dict[str, Any] = {k: sum(r[k] for r in rows) for k in (*_TOKENS, "priced_calls", *NO_COST_FIELDS)}
        totals["cost_nano_usd"] = total_nano if totals["calls"] else 0  # nothing happened: truly $0
        totals["cache_hit_ratio"] = ratio(totals["cache_read_tokens"], totals["input_tokens"])
        totals["cost_usd"] = _usd_text(totals["cost_nano_usd"])
        if previous is not None:
            before = sum(previous.values())
            totals["previous_cost_nano_usd"] = before
            totals["change"] = None if not before or total_nano is None else (total_nano - before) / before
        if "tenant" in by:
            unattributed = sum(r["cost_nano_usd"] or 0 for r in rows if r.get("tenant") == UNATTRIBUTED)
        else:
            unattributed = self._unattributed_nano(period, where)
        totals["unattributed_cost_nano_usd"] = unattributed
        totals["unattributed_share"] = ratio(unattributed, total_nano)
        # calls tokentrail could not vouch were counted once (tokentrail.unverified): part of the spend above
        totals["unverified_calls"], totals["unverified_cost_nano_usd"] = self._unverified(period, where)
        adjustments.add_to_report(self.conn, rows, totals, by, period, where)
        out = {
            "ledger": self.path,
            "group_by": list(by),
            "period": period.describe(),
            "compared_with": previous_period.describe() if previous_period else None,
            "where": {k: v for k, v in where},
            "rows": rows,
            "total": totals,
        }
        if runs := reconciliations.history(self.conn, period.since_ns, period.until_ns):
            out["reconciliations"] = runs  # invoice-matched totals: `tokentrail reconcile`
        return out

    def _grouped(self, by: Sequence[str], period: Period, where: Where
                 ) -> tuple[dict[tuple, dict], dict[tuple, int] | None]:
        """Aggregates per group for the period, and cost per group for the previous equal period.

        The two periods are aggregated at the same time on two connections (SQLite releases the
        GIL while it scans): a report costs about one period's scan of the covering index.
        """
        exprs = [FIELDS[f] for f in by]
        select = "".join(f"{e}, " for e in exprs)
        group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(exprs)))}" if exprs else ""
        if self._owner_index_fits(by, period, where):
            return self._grouped_by_owner(select, group, len(exprs), period, where)
        cond, params = selection(period, where)
        sql = (
            f"SELECT {select}COUNT(*), SUM(input_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens),"
            " SUM(output_tokens), SUM(cost_nano), COUNT(cost_nano)"
            f" FROM spans WHERE llm = 1 AND {cond}{group}"
        )
        previous = period.previous()
        before_future = None
        if previous is not None:
            prev_cond, prev_params = selection(previous, where)
            before_future = _POOL.submit(
                self._side_query,
                f"SELECT {select}SUM(cost_nano) FROM spans WHERE llm = 1 AND {prev_cond}{group}",
                prev_params,
            )
        out: dict[tuple, dict] = {}
        for row in self.conn.execute(sql, params):
            if row[len(exprs)]:
                out[tuple(row[: len(exprs)])] = _group(*row[len(exprs):])
        before = None
        if before_future is not None:
            before = {tuple(r[: len(exprs)]): r[-1] for r in before_future.result() if r[-1]}
        return out, before

    def _owner_index_fits(self, by: Sequence[str], period: Period, where: Where) -> bool:
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

    def _grouped_by_owner(self, select: str, group: str, n: int, period: Period, where: Where
                          ) -> tuple[dict[tuple, dict], dict[tuple, int] | None]:
        previous = period.previous()
        if previous is None:
            cond, params = selection(period, where)
            cur, end, prev_cost = "", "", "NULL"
        else:
            cond, params = selection(Period(previous.since_ns, period.until_ns), where)
            cur, end = f"CASE WHEN start_ns >= {int(period.since_ns)} THEN ", " END"
            prev_cost = f"SUM(CASE WHEN start_ns < {int(period.since_ns)} THEN cost_nano END)"
        sql = (
            f"SELECT {select}COUNT({cur}1{end}), SUM({cur}input_tokens{end}), SUM({cur}cache_read_tokens{end}),"
            f" SUM({cur}cache_write_tokens{end}), SUM({cur}output_tokens{end}), SUM({cur}cost_nano{end}),"
            f" COUNT({cur}cost_nano{end}), {prev_cost}"
            f" FROM spans INDEXED BY spans_owner WHERE llm = 1 AND {cond}{group}"
        )
        out: dict[tuple, dict] = {}
        before: dict[tuple, int] | None = None if previous is None else {}
        for row in self.conn.execute(sql, params):
            key = tuple(row[:n])
            *agg, prev = row[n:]
            if before is not None and prev:
                before[key] = prev
            if agg[0]:
                out[key] = _group(*agg)
        return out, before

    def _side_query(self, sql: str, params: list) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def _no_cost_kinds(self, by: Sequence[str], period: Period, where: Where) -> dict[tuple, dict[str, int]]:
        """Per group, why calls have no cost (see ``NO_COST_KIND``); only rows without a cost are read."""
        exprs = [FIELDS[f] for f in by]
        cond, params = selection(period, where)
        sql = (
            f"SELECT {''.join(f'{e}, ' for e in exprs)}{NO_COST_KIND}, COUNT(*) FROM spans"
            f" WHERE llm = 1 AND {cond} AND cost_nano IS NULL GROUP BY {', '.join(str(i + 1) for i in range(len(exprs) + 1))}"
        )
        out: dict[tuple, dict[str, int]] = {}
        for row in self.conn.execute(sql, params):
            out.setdefault(tuple(row[: len(exprs)]), {})[row[-2]] = row[-1]
        return out

    def _unverified(self, period: Period, where: Where) -> tuple[int, int | None]:
        """(calls, nano-USD) of the calls marked ``unverified``; None when none of them has a cost."""
        cond, params = selection(period, where)
        calls, nano = self.conn.execute(
            f"SELECT COUNT(*), SUM(cost_nano) FROM spans WHERE llm = 1 AND {cond} AND unverified IS NOT NULL", params
        ).fetchone()
        return calls, nano

    def _unattributed_nano(self, period: Period, where: Where) -> int:
        cond, params = selection(period, where)
        (value,) = self.conn.execute(
            f"SELECT SUM(cost_nano) FROM spans WHERE llm = 1 AND {cond} AND tenant IS NULL", params
        ).fetchone()
        return value or 0
