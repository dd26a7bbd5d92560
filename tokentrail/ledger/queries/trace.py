"""``trace``: one trace as a span tree, with per-span tokens and cost, subtree and cumulative cost."""

from __future__ import annotations

import re

from tokentrail.ledger.queries.common import STOPPED_ERROR_TYPE, LedgerBase, QueryError, ratio, usd

_COLUMNS = ("span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "status", "service", "llm",
            "provider", "request_model", "response_model", "input_tokens", "cache_read_tokens",
            "cache_write_tokens", "output_tokens", "reasoning_tokens", "cost_status", "cost_nano", "tenant",
            "feature", "team", "user_id", "task_name", "task_id", "retry_attempt", "fallback_from", "error_type",
            "rate_card_version", "pricing_tier")
#: owner key in the answer -> column
_OWNER = (("tenant", "tenant"), ("feature", "feature"), ("team", "team"), ("user", "user_id"),
          ("task", "task_name"), ("task_id", "task_id"))
_STATUS = {0: "unset", 1: "ok", 2: "error"}


class TraceQuery(LedgerBase):
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
        spans = [
            dict(zip(_COLUMNS, row))
            for row in self.conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM spans WHERE trace_id = ? ORDER BY start_ns, id", (trace_id,)
            )
        ]
        out_spans = [_span(s, running) for s, running in _tree_order(spans)]
        priced = [s["cost_nano"] for s in spans if s["llm"] and s["cost_nano"] is not None]
        total = sum(priced) if priced or not any(s["llm"] for s in spans) else None
        owner: dict[str, str] = {}
        for s in out_spans:
            for k, v in s["owner"].items():
                owner.setdefault(k, v)
        return {
            "trace_id": trace_id,
            "spans": out_spans,
            "calls": sum(1 for s in spans if s["llm"]),
            "owner": owner,
            "cost_nano_usd": total,
            "cost_usd": None if total is None else str(usd(total)),
        }


def _tree_order(spans: list[dict]) -> list[tuple[dict, int]]:
    """Spans depth-first under their parents (a span whose parent is not in the ledger is a root),
    each with ``depth`` and ``subtree_cost_nano_usd`` set, paired with the cumulative cost so far."""
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
    out, running = [], 0
    for s in ordered:
        running += s["cost_nano"] or 0
        out.append((s, running))
    return out


def _span(s: dict, running: int) -> dict:
    item = {
        "span_id": s["span_id"],
        "parent_span_id": s["parent_span_id"],
        "depth": s["depth"],
        "name": s["name"],
        "status": _STATUS.get(s["status"], s["status"]),
        "duration_ms": None if s["end_ns"] is None else (s["end_ns"] - s["start_ns"]) / 1e6,
        "llm": bool(s["llm"]),
        "subtree_cost_nano_usd": s["subtree_cost_nano_usd"],
        "cumulative_cost_nano_usd": running,
    }
    if s["llm"]:
        item.update(
            provider=s["provider"],
            request_model=s["request_model"],
            model=s["response_model"] or s["request_model"],
            input_tokens=s["input_tokens"],
            cache_read_tokens=s["cache_read_tokens"],
            cache_write_tokens=s["cache_write_tokens"],
            output_tokens=s["output_tokens"],
            reasoning_tokens=s["reasoning_tokens"],
            cache_hit_ratio=ratio(s["cache_read_tokens"], s["input_tokens"]),
            cost_status="blocked" if s["error_type"] == STOPPED_ERROR_TYPE else s["cost_status"],
            cost_nano_usd=s["cost_nano"],
            cost_usd=None if s["cost_nano"] is None else str(usd(s["cost_nano"])),
            rate_card_version=s["rate_card_version"],
            pricing_tier=s["pricing_tier"],
            retry_attempt=s["retry_attempt"],
            fallback_from=s["fallback_from"],
            error_type=s["error_type"],
        )
    item["owner"] = {k: s[c] for k, c in _OWNER if s[c]}
    return item
