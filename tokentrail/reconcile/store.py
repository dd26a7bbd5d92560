"""Reconciliation runs kept in the ledger (table ``reconciliations``, schema v4)."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timezone


def rate_card_versions(conn: sqlite3.Connection, provider: str, since_ns: int, until_ns: int) -> str | None:
    """The rate-card versions the ledger priced the period's calls with (comma-separated)."""
    rows = conn.execute(
        "SELECT DISTINCT rate_card_version FROM spans WHERE llm = 1 AND provider = ? AND start_ns >= ? AND start_ns < ?"
        " AND rate_card_version IS NOT NULL ORDER BY 1", (provider, since_ns, until_ns)).fetchall()
    return ",".join(r[0] for r in rows) or None


def save(conn: sqlite3.Connection, result: dict) -> int:
    """Store one run in one transaction; its id."""
    total = result["total"]
    conn.execute("BEGIN IMMEDIATE")
    try:
        cursor = conn.execute(
            "INSERT INTO reconciliations (created_ns, provider, since_day, until_day, grain, provider_cost_nano,"
            " ledger_cost_nano, rate_card_version, result_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time_ns(), result["provider"], result["since"], result["until"], ",".join(result["grain"]),
             total["provider"]["cost_nano"], total["ledger"]["cost_nano"], result.get("rate_card_version"),
             json.dumps(result, separators=(",", ":"))))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(cursor.lastrowid)


def history(conn: sqlite3.Connection, since_ns: int | None = None, until_ns: int | None = None) -> list[dict]:
    """Stored runs overlapping the period, newest first: provider, period, both totals, capture rate."""
    clauses, params = [], []
    if since_ns is not None:
        clauses.append("until_day > ?")
        params.append(_day(since_ns))
    if until_ns is not None:
        clauses.append("since_day <= ?")
        params.append(_day(until_ns - 1))
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    try:
        rows = conn.execute(
            "SELECT id, created_ns, provider, since_day, until_day, grain, provider_cost_nano, ledger_cost_nano,"
            f" rate_card_version FROM reconciliations{where} ORDER BY created_ns DESC, id DESC", params).fetchall()
    except sqlite3.OperationalError:  # a ledger older than v4 opened read-only: no runs yet
        return []
    keys = ("id", "created_ns", "provider", "since", "until", "grain", "provider_cost_nano", "ledger_cost_nano",
            "rate_card_version")
    out = []
    for row in rows:
        item = dict(zip(keys, row))
        item["capture_rate"] = item["ledger_cost_nano"] / item["provider_cost_nano"] if item["provider_cost_nano"] \
            else None
        out.append(item)
    return out


def _day(ns: int) -> str:
    return datetime.fromtimestamp(min(ns, 253402300799 * 10**9) // 10**9, timezone.utc).date().isoformat()
