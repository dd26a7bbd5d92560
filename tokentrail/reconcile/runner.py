"""One reconciliation run: the provider's lines, the ledger's cells, the comparison."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timezone
from typing import Callable, Sequence

from tokentrail.reconcile import engine, sources, store
from tokentrail.reconcile.sources import KEY_ENV, SourceError

PROVIDERS = {"openai": sources.openai_lines, "anthropic": sources.anthropic_lines}
BASE_URLS = {"openai": ("OPENAI_BASE_URL", sources.OPENAI_BASE), "anthropic": ("ANTHROPIC_BASE_URL", sources.ANTHROPIC_BASE)}



def run(conn: sqlite3.Connection, provider: str, base_url: str, key: str, since: datetime, until: datetime,
        grain: Sequence[str] = engine.DEFAULT_GRAIN, *, sleep: Callable[[float], None] = time.sleep) -> dict:
    """The comparison of ``provider``'s bill over [since, until) (UTC day bounds) with the ledger."""
    lines = PROVIDERS[provider](base_url, key, since, until, keys="api_key" in grain, sleep=sleep)
    ns = (int(since.timestamp()) * 10**9, int(until.timestamp()) * 10**9)
    hints = [r[0] for r in conn.execute("SELECT DISTINCT api_key_hint FROM spans WHERE llm = 1 AND provider = ?"
                                        " AND api_key_hint IS NOT NULL", (provider,))] if "api_key" in grain else []
    workspaces = (sources.anthropic_key_workspaces(base_url, key, sleep=sleep)
                  if provider == "anthropic" and "workspace" in grain else None)
    result = engine.compare(engine.ledger_cells(conn, provider, *ns, grain, workspaces),
                            engine.provider_cells(lines, grain, hints), grain, provider)
    result.update(provider=provider, since=since.date().isoformat(), until=until.date().isoformat(),
                  rate_card_version=store.rate_card_versions(conn, provider, *ns))
    return result


def utc_midnight(ns: int) -> datetime:
    moment = datetime.fromtimestamp(ns // 10**9, timezone.utc)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


