"""Ledger schema: spans, reconciliations and adjustments, versioned with ``PRAGMA user_version``.

Migrations only ever move forward. A ledger written by an older tokentrail is migrated
when opened; one written by a newer tokentrail is refused (we cannot know what its new
columns mean, and silently dropping them would make reports wrong).
"""

from __future__ import annotations

import sqlite3

#: Column order of a span row, as produced by ``rows.span_to_row`` and written by the writer.
COLUMNS = (
    # identity and tree (every span)
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "status", "service",
    # LLM calls only (NULL otherwise); llm = 1 marks them so reports use the partial index
    "llm", "provider", "operation", "request_model", "response_model", "pricing_model", "error_type",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens",
    "reasoning_tokens",
    # cost: exact integer nano-USD, never floats
    "cost_status", "cost_nano", "cost_input_nano", "cost_cache_read_nano", "cost_cache_write_nano",
    "cost_output_nano", "cost_fees_nano", "rate_card_version", "pricing_tier",
    # owner (stamped on every span by the attribution processor)
    "tenant", "feature", "team", "user_id", "task_name", "task_id", "retry_attempt", "fallback_from",
)
#: The columns version 1 created: a file without them is not a tokentrail ledger.
V1_COLUMNS = COLUMNS
COLUMNS += (
    # join keys with the provider's bill (v4): what its admin APIs group by
    "provider_project", "provider_organization", "provider_workspace", "api_key_hint",
    # what savings, margin and exactness read (v5)
    "request_max_tokens", "service_tier", "task_outcome", "unverified",
)

_V1 = """
CREATE TABLE spans (
    id INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind INTEGER,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    status INTEGER,
    service TEXT,
    llm INTEGER,
    provider TEXT,
    operation TEXT,
    request_model TEXT,
    response_model TEXT,
    pricing_model TEXT,
    error_type TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cache_read_tokens INTEGER,
    cache_write_tokens INTEGER,
    cache_write_1h_tokens INTEGER,
    reasoning_tokens INTEGER,
    cost_status TEXT,
    cost_nano INTEGER,
    cost_input_nano INTEGER,
    cost_cache_read_nano INTEGER,
    cost_cache_write_nano INTEGER,
    cost_output_nano INTEGER,
    cost_fees_nano INTEGER,
    rate_card_version TEXT,
    pricing_tier TEXT,
    tenant TEXT,
    feature TEXT,
    team TEXT,
    user_id TEXT,
    task_name TEXT,
    task_id TEXT,
    retry_attempt INTEGER,
    fallback_from TEXT,
    UNIQUE (trace_id, span_id)
);
"""

# v2: indexes for the CLI's queries. The report index covers every column a report reads, so
# a report over a period is one range scan of a narrow index, never a lookup per row.
_V2 = """
CREATE INDEX spans_report ON spans (
    start_ns, tenant, feature, team, user_id, task_name, provider, request_model, response_model,
    input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, cost_nano
) WHERE llm = 1;
CREATE INDEX spans_task ON spans (task_id) WHERE task_id IS NOT NULL AND llm = 1;
"""

# v3: the owner index. Reports grouped by tenant (and feature) over a long period read it in
# group order in one pass, both periods at once, with no sort (the 1M-span bench's query).
_V3 = """
CREATE INDEX spans_owner ON spans (
    tenant, feature, start_ns, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, cost_nano
) WHERE llm = 1;
"""

# v4: reconciliation with the provider's bill. The join keys of each call; every reconciliation
# run (both sides and the explained residual, as JSON); re-pricing as adjustment entries that
# point at the original row, which is never rewritten (net = cost_nano + SUM(delta_nano)).
_V4 = """
ALTER TABLE spans ADD COLUMN provider_project TEXT;
ALTER TABLE spans ADD COLUMN provider_organization TEXT;
ALTER TABLE spans ADD COLUMN provider_workspace TEXT;
ALTER TABLE spans ADD COLUMN api_key_hint TEXT;
CREATE TABLE reconciliations (
    id INTEGER PRIMARY KEY,
    created_ns INTEGER NOT NULL,
    provider TEXT NOT NULL,
    since_day TEXT NOT NULL,
    until_day TEXT NOT NULL,
    grain TEXT NOT NULL,
    provider_cost_nano INTEGER NOT NULL,
    ledger_cost_nano INTEGER NOT NULL,
    rate_card_version TEXT,
    result_json TEXT NOT NULL
);
CREATE TABLE adjustments (
    id INTEGER PRIMARY KEY,
    span_row INTEGER NOT NULL REFERENCES spans (id),
    batch TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    delta_nano INTEGER NOT NULL,
    rate_card_version TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX adjustments_span ON adjustments (span_row);
"""

# v5: the request's output cap and service tier (savings: output caps, batch), the task run's
# outcome on the task span (cost per successful task, waste), and why a call's single count
# could not be vouched for (NULL when it can).
_V5 = """
ALTER TABLE spans ADD COLUMN request_max_tokens INTEGER;
ALTER TABLE spans ADD COLUMN service_tier TEXT;
ALTER TABLE spans ADD COLUMN task_outcome TEXT;
ALTER TABLE spans ADD COLUMN unverified TEXT;
"""

#: MIGRATIONS[i] moves a ledger from version i to version i + 1.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5)
SCHEMA_VERSION = len(MIGRATIONS)


class LedgerError(Exception):
    """A ledger cannot be used; the message is one clear line for the user."""


class LedgerTooNew(LedgerError):
    pass


def user_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, path: str = "ledger", target: int = SCHEMA_VERSION) -> int:
    """Bring the ledger to ``target``; safe when several processes open it at once.

    The version check and the migration run in one IMMEDIATE transaction, so only one
    process migrates and the others see the result.
    """
    version = user_version(conn)
    if version == target:
        return version
    if version > SCHEMA_VERSION:
        raise LedgerTooNew(
            f"{path} has ledger schema version {version}, newer than this tokentrail understands"
            f" ({SCHEMA_VERSION}): upgrade tokentrail to read it"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = user_version(conn)
        if version > SCHEMA_VERSION:
            raise LedgerTooNew(
                f"{path} has ledger schema version {version}, newer than this tokentrail understands"
                f" ({SCHEMA_VERSION}): upgrade tokentrail to read it"
            )
        for step in range(version, target):
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return target


def connect(path: str, *, busy_timeout_ms: int = 5000, target: int = SCHEMA_VERSION) -> sqlite3.Connection:
    """Open (creating if needed) a ledger in WAL mode and migrate it to ``target``."""
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch.
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable across application crashes in WAL mode and much faster than FULL.
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn, path, target)
    except BaseException:
        conn.close()
        raise
    return conn
