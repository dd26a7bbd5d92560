"""What every ledger question shares: the opened ledger, periods, ``--by``/``--where`` fields, labels."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Iterable, Sequence, TypeVar

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

Where = Sequence[tuple[str, str | None]]
_L = TypeVar("_L", bound="LedgerBase")


class LedgerNotFound(LedgerError):
    pass


class QueryError(LedgerError):
    """Bad user input: period, field, trace id."""


class LedgerBase:
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

    def __enter__(self: _L) -> _L:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


# --- fields ------------------------------------------------------------------------------------
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


def where_sql(where: Where) -> tuple[str, list[Any]]:
    """`` AND ...`` clauses and their parameters for parsed ``--where`` pairs."""
    clauses, params = [], []
    for key, value in where:
        if value is None:
            clauses.append(f"{FIELDS[key]} IS NULL")
        else:
            clauses.append(f"{FIELDS[key]} = ?")
            params.append(value)
    return "".join(f" AND {c}" for c in clauses), params


def selection(period: Period, where: Where) -> tuple[str, list[Any]]:
    """The period and ``--where`` filter as one SQL condition (after ``llm = 1 AND``) and its parameters."""
    period_sql, params = period.sql()
    clauses, where_params = where_sql(where)
    return period_sql + clauses, params + where_params


# --- numbers and labels ------------------------------------------------------------------------
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
