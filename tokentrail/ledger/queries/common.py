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

from tokentrail.errors import BudgetExceeded
from tokentrail.ledger.schema import SCHEMA_VERSION, V1_COLUMNS, LedgerError, LedgerTooNew, connect, user_version

NANO = 10**9
UNATTRIBUTED = "(unattributed)"
UNKNOWN = "(unknown)"
#: error.type of an LLM call a circuit breaker stopped before sending: never sent, never billed.
STOPPED_ERROR_TYPE = BudgetExceeded.__name__
#: Why a call has no cost: ``blocked`` (stopped by a breaker), ``unpriced`` (model not on the rate
#: card) or ``no_usage`` (failed, or reported no usable usage); NULL for a priced call.
NO_COST_KIND = (
    "CASE WHEN cost_nano IS NOT NULL THEN NULL"
    f" WHEN error_type = '{STOPPED_ERROR_TYPE}' THEN 'blocked'"
    " WHEN cost_status = 'unpriced' THEN 'unpriced' ELSE 'no_usage' END"
)
NO_COST_KINDS = ("unpriced", "no_usage", "blocked")
NO_COST_FIELDS = tuple(f"{k}_calls" for k in NO_COST_KINDS)
#: The SQLite INTEGER range bounds every time: a period outside it is clamped, never an overflow.
MIN_NS, MAX_NS = 0, 2**63 - 1

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
    "status": f"COALESCE({NO_COST_KIND}, cost_status)",
}
#: Owner fields: a missing value is unattributed spend (shown, never hidden).
OWNER_FIELDS = ("tenant", "feature", "team", "user", "task")
#: How a missing value of each field is shown (and accepted back by ``--where``).
MISSING = {"tenant": UNATTRIBUTED, **{f: f"(no {f})" for f in OWNER_FIELDS[1:]}}

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
        self.path = path
        try:
            self.conn = _open_read_only(path)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc}") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self: _L) -> _L:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_read_only(path: str) -> sqlite3.Connection:
    """A reader never changes the file: read-only, and only a tokentrail ledger is accepted.

    A tokentrail ledger of an older schema is the one exception: it is migrated (as its writer would).
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, check_same_thread=False)
    try:
        version = user_version(conn)
        columns = {r[1] for r in conn.execute("PRAGMA table_info(spans)")}
        if version > SCHEMA_VERSION:
            raise LedgerTooNew(
                f"{path} has ledger schema version {version}, newer than this tokentrail understands"
                f" ({SCHEMA_VERSION}): upgrade tokentrail to read it"
            )
        if version < 1 or not set(V1_COLUMNS) <= columns:
            raise LedgerError(f"{path} is not a tokentrail ledger (left unchanged): give --ledger a tokentrail.db")
        if version < SCHEMA_VERSION:
            conn.close()
            connect(path).close()
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, check_same_thread=False)
    except BaseException:
        conn.close()
        raise
    return conn


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
        digits = match.group(1).lstrip("0") or "0"
        seconds = int(digits) * _UNIT_S[match.group(2)] if len(digits) <= 18 else MAX_NS
        return _clamp(now_ns - min(seconds, MAX_NS) * NANO)
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        else:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
        seconds = moment.timestamp()
    except (ValueError, OverflowError):
        raise QueryError(f"bad period {text!r}: use a duration like 7d, 24h, 30m, or a date like 2026-11-01") from None
    return _clamp(int(seconds) * NANO + moment.microsecond * 1000)


def _clamp(ns: int) -> int:
    """Times before 1970 or after 2262 (SQLite's INTEGER range in nanoseconds) hold no spans: clamp."""
    return max(MIN_NS, min(ns, MAX_NS))


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
        until_ns = parse_time(until, now_ns) if until else min(now_ns + 1, MAX_NS)  # +1: include spans stamped "now"
        since_ns = parse_time(since, now_ns) if since else None
        if since_ns is not None and since_ns >= until_ns:
            raise QueryError(f"bad period: --since {since} is not before --until {until or 'now'}")
        return cls(since_ns, until_ns)

    def previous(self) -> "Period | None":
        if self.since_ns is None:
            return None
        return Period(max(-MAX_NS, self.since_ns - (self.until_ns - self.since_ns)), self.since_ns)

    def sql(self) -> tuple[str, list[int]]:
        if self.since_ns is None:
            return "start_ns < ?", [self.until_ns]
        return "start_ns >= ? AND start_ns < ?", [self.since_ns, self.until_ns]

    def describe(self) -> dict[str, str | None]:
        return {"since": iso(self.since_ns), "until": iso(self.until_ns)}


# --- fields ------------------------------------------------------------------------------------
def month_period(text: str) -> Period:
    """``2026-11``: that UTC calendar month, [first day, first day of the next month)."""
    try:
        first = datetime.strptime(text.strip(), "%Y-%m").replace(tzinfo=timezone.utc)
        after = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
    except ValueError:
        raise QueryError(f"bad --month {text!r}: use a year and month, e.g. 2026-11") from None
    if not MIN_NS <= first.timestamp() * 10**9 < after.timestamp() * 10**9 <= MAX_NS:
        raise QueryError(f"bad --month {text!r}: the ledger holds 1970-01 to 2262-03")
    return Period(int(first.timestamp()) * 10**9, int(after.timestamp()) * 10**9)


def check_fields(names: Iterable[str], option: str = "--by") -> list[str]:
    out = []
    for name in names:
        name = name.strip().lower()
        if not name:
            continue
        if name not in FIELDS:
            raise QueryError(f"unknown field {name!r} in {option}: choose from {', '.join(FIELDS)}")
        out.append(name)
    return out


def parse_where(items: Sequence[str] | None) -> list[tuple[str, str | None]]:
    """``tenant=acme`` pairs; an empty value (``tenant=``) selects unattributed rows."""
    out = []
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise QueryError(f"bad --where {item!r}: use field=value, e.g. tenant=acme")
        (key,) = check_fields([key], "--where") or [""]
        if not key:
            raise QueryError(f"bad --where {item!r}: use field=value, e.g. tenant=acme")
        value = value.strip()
        out.append((key, None if value in ("", UNATTRIBUTED, UNKNOWN, MISSING.get(key)) else value))
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
        return MISSING.get(field, UNKNOWN)
    return str(value)


def no_cost_counts(kinds: dict[str, int] | None) -> dict[str, int]:
    """``unpriced_calls``, ``no_usage_calls``, ``blocked_calls``: each kind counted on its own."""
    kinds = kinds or {}
    return {f"{k}_calls": kinds.get(k, 0) for k in NO_COST_KINDS}


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
