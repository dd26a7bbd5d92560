"""``top``: the most expensive traces and agent tasks, and what made each expensive."""

from __future__ import annotations

import statistics
from typing import Any

from tokentrail.ledger import adjustments
from tokentrail.ledger.queries.common import (
    NO_COST_KIND, OWNER_FIELDS, STOPPED_ERROR_TYPE, LedgerBase, Period, Where, iso, ratio, selection, usd,
)

# What makes a trace or task expensive (see ``explain``).
LONG_PROMPT_TOKENS = 8000
LONG_OUTPUT_TOKENS = 2000
LOW_CACHE_HIT_RATIO = 0.2
MANY_CALLS = 10
RUNAWAY_FACTOR = 3.0


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
 SUM(CASE WHEN {NO_COST_KIND} = 'unpriced' THEN 1 ELSE 0 END),
 SUM(CASE WHEN {NO_COST_KIND} = 'no_usage' THEN 1 ELSE 0 END),
 SUM(CASE WHEN error_type = '{STOPPED_ERROR_TYPE}' THEN 1 ELSE 0 END)"""
_AGG_KEYS = (
    "calls", "cost_nano_usd", "input_tokens", "cache_read_tokens", "output_tokens",
    "max_input_tokens", "max_output_tokens", "cost_input_nano", "cost_output_nano",
    "retries", "fallback_from", "tenant", "feature", "team", "user", "task", "start_ns", "unpriced_calls",
    "no_usage_calls", "stopped_calls",
)
# cost_nano_usd stays None when no call could be priced: unknown spend is not $0
_ZERO_IF_NULL = ("input_tokens", "cache_read_tokens", "output_tokens", "cost_input_nano",
                 "cost_output_nano", "max_input_tokens", "max_output_tokens")


class TopQuery(LedgerBase):
    def top(self, period: Period, where: Where = (), limit: int = 10) -> dict:
        tasks_all = self._aggregates("task_id", period, where, extra=" AND task_id IS NOT NULL")
        costs_by_name: dict[str, list[int]] = {}
        for agg in tasks_all:
            if agg["cost_nano_usd"] is not None:
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
            item.update(_finish(agg, **explain_args))
            traces.append(item)
        tasks = []
        for agg in tasks_all[:limit]:
            if agg["fallback_from"]:
                agg["fallback_to"] = self._fallback_to("task_id", agg["key"])
            name = agg["task"] or ""
            item = {"task_id": agg["key"], "task": name or None}
            item.update(_finish(agg, median_cost_nano=medians.get(name), median_of=name or "task"))
            # the one task outcome the LLM rows prove (ok/error live on the task span only)
            item["outcome"] = "budget_exceeded" if item["stopped_calls"] else None
            item["median_task_cost_nano_usd"] = medians.get(name)
            item["tasks_of_this_name"] = len(costs_by_name.get(name, ()))
            tasks.append(item)
        found = {column: adjustments.sums(self.conn, [column], period, where,
                                          f" AND {column} IN ({', '.join('?' * len(ids))})", ids) if ids else {}
                 for column, ids in (("trace_id", [t["trace_id"] for t in traces]),
                                     ("task_id", [t["task_id"] for t in tasks]))}
        if any(found.values()):  # re-priced: original, adjustments and net
            for items, column in ((traces, "trace_id"), (tasks, "task_id")):
                for item in items:
                    adjustments.add_net(item, found[column].get((item[column],), 0))
        return {"ledger": self.path, "period": period.describe(), "traces": traces, "tasks": tasks}

    def _aggregates(self, key_sql: str, period: Period, where: Where, extra: str = "",
                    limit: int | None = None) -> list[dict]:
        cond, params = selection(period, where)
        sql = (
            f"SELECT {key_sql}, {_AGG} FROM spans WHERE llm = 1 AND {cond}{extra}"
            f" GROUP BY 1 ORDER BY 3 DESC" + (f" LIMIT {int(limit)}" if limit else "")
        )
        out = []
        for row in self.conn.execute(sql, params):
            agg = dict(zip(("key", *_AGG_KEYS), row))
            for k in _ZERO_IF_NULL:
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


def _finish(agg: dict, **explain_args: Any) -> dict:
    out = {
        "cost_nano_usd": agg["cost_nano_usd"],
        "cost_usd": None if agg["cost_nano_usd"] is None else str(usd(agg["cost_nano_usd"])),
        "calls": agg["calls"],
        "owner": {k: agg[k] for k in OWNER_FIELDS if agg.get(k)},
        "input_tokens": agg["input_tokens"],
        "cache_read_tokens": agg["cache_read_tokens"],
        "output_tokens": agg["output_tokens"],
        "cache_hit_ratio": ratio(agg["cache_read_tokens"], agg["input_tokens"]),
        "retries": agg["retries"] or 0,
        "unpriced_calls": agg["unpriced_calls"] or 0,
        "no_usage_calls": agg["no_usage_calls"] or 0,
        "stopped_calls": agg["stopped_calls"] or 0,  # stopped by a breaker before sending (never billed)
        "started": iso(agg["start_ns"]),
        "reasons": explain(agg, **explain_args),
    }
    if agg.get("fallback_from"):
        out["fallback"] = {"from": agg["fallback_from"], "to": agg.get("fallback_to")}
    return out
