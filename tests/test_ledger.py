"""The ledger: exact costs, every span's tree, safe concurrent writers, failures as counted drops, migrations."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import sqlite3
import subprocess

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tokentrail.ledger import LedgerSpanExporter, LedgerTooNew, SCHEMA_VERSION
from tokentrail.ledger import schema
from tokentrail.ledger.queries import Ledger, Period
from tokentrail.ledger.rows import usd_to_nano
from tokentrail.semconv import attributes as a

TENANTS = ["acme", "globex", "initech", "umbrella", None]
FEATURES = ["search", "summarize", "chat"]


def llm_attrs(rng: random.Random, **over) -> dict:
    """A priced LLM span's attributes as the cost processor leaves them."""
    inp = rng.randint(100, 20000)
    cread = rng.randint(0, inp)
    out = rng.randint(10, 3000)
    parts = [rng.randint(0, 5_000_000) for _ in range(4)]
    attrs = {
        a.GEN_AI_PROVIDER_NAME: "openai",
        a.GEN_AI_OPERATION_NAME: "chat",
        a.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        a.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
        a.GEN_AI_USAGE_INPUT_TOKENS: inp,
        a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: cread,
        a.GEN_AI_USAGE_OUTPUT_TOKENS: out,
        a.TOKENTRAIL_COST_STATUS: "priced",
        a.TOKENTRAIL_COST_INPUT: parts[0] * 1e-9,
        a.TOKENTRAIL_COST_CACHE_READ: parts[1] * 1e-9,
        a.TOKENTRAIL_COST_CACHE_WRITE: 0.0,
        a.TOKENTRAIL_COST_OUTPUT: parts[2] * 1e-9,
        a.TOKENTRAIL_COST_FEES: parts[3] * 1e-9,
        a.TOKENTRAIL_COST_NANO_USD: sum(parts),
        a.GEN_AI_USAGE_COST_AMOUNT: sum(parts) * 1e-9,
        a.TOKENTRAIL_RATE_CARD_VERSION: "genai-prices-test+overlay-abc",
        a.TOKENTRAIL_PRICING_TIER: "standard",
        a.TOKENTRAIL_FEATURE: rng.choice(FEATURES),
    }
    tenant = rng.choice(TENANTS)
    if tenant:
        attrs[a.TOKENTRAIL_TENANT] = tenant
    attrs.update(over)
    return {k: v for k, v in attrs.items() if v is not None}


def make_spans(n_traces: int, seed: int = 1, calls_per_trace: int = 3) -> list:
    """Real ReadableSpans from the SDK: a root span with LLM children, per trace."""
    rng = random.Random(seed)
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "ledger-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for _ in range(n_traces):
        with tracer.start_as_current_span("handle request", kind=SpanKind.SERVER):
            for _ in range(rng.randint(1, calls_per_trace)):
                with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=llm_attrs(rng)):
                    pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def test_every_span_is_stored_with_its_tree_and_exact_costs(tmp_path):
    spans = make_spans(20)
    path = str(tmp_path / "l.db")
    exporter = LedgerSpanExporter(path)
    assert exporter.export(spans).name == "SUCCESS"
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == len(spans)
    by_id = {format(s.context.span_id, "016x"): s for s in spans}
    rows = conn.execute(
        "SELECT span_id, trace_id, parent_span_id, name, kind, start_ns, end_ns, service, cost_nano,"
        " cost_input_nano, cost_output_nano, tenant, rate_card_version, pricing_tier, input_tokens FROM spans"
    ).fetchall()
    for span_id, trace_id, parent, name, kind, start, end, service, cost, cin, cout, tenant, card, tier, inp in rows:
        s = by_id[span_id]
        assert trace_id == format(s.context.trace_id, "032x")
        assert parent == (format(s.parent.span_id, "016x") if s.parent else None)
        assert (name, kind, start, end, service) == (s.name, s.kind.value, s.start_time, s.end_time, "ledger-test")
        attrs = s.attributes
        if a.TOKENTRAIL_COST_NANO_USD in attrs:
            assert cost == attrs[a.TOKENTRAIL_COST_NANO_USD]
            assert cin == usd_to_nano(attrs[a.TOKENTRAIL_COST_INPUT])
            assert cout == usd_to_nano(attrs[a.TOKENTRAIL_COST_OUTPUT])
            assert tenant == attrs.get(a.TOKENTRAIL_TENANT)
            assert (card, tier, inp) == ("genai-prices-test+overlay-abc", "standard", attrs[a.GEN_AI_USAGE_INPUT_TOKENS])
        else:
            assert cost is None and inp is None  # the request span: tree only


def test_report_totals_equal_the_sum_of_span_costs_to_the_nano_dollar(tmp_path):
    spans = make_spans(400, seed=42, calls_per_trace=6)
    path = str(tmp_path / "l.db")
    exporter = LedgerSpanExporter(path)
    for i in range(0, len(spans), 97):  # several batches, as the BatchSpanProcessor sends them
        exporter.export(spans[i : i + 97])
    expected_total = sum(s.attributes.get(a.TOKENTRAIL_COST_NANO_USD, 0) for s in spans)
    expected_by_tenant: dict = {}
    for s in spans:
        if a.TOKENTRAIL_COST_NANO_USD in s.attributes:
            key = s.attributes.get(a.TOKENTRAIL_TENANT, "(unattributed)")
            expected_by_tenant[key] = expected_by_tenant.get(key, 0) + s.attributes[a.TOKENTRAIL_COST_NANO_USD]
    with Ledger(path) as ledger:
        everything = Period.parse(None, None)
        for by in (["tenant"], ["tenant", "feature"], ["model", "day"], ["team"]):
            report = ledger.report(by, everything)
            assert report["total"]["cost_nano_usd"] == expected_total
            assert sum(r["cost_nano_usd"] for r in report["rows"]) == expected_total
        by_tenant = {r["tenant"]: r["cost_nano_usd"] for r in ledger.report(["tenant"], everything)["rows"]}
        assert by_tenant == expected_by_tenant
        assert "(unattributed)" in by_tenant  # unattributed spend is its own row
        assert ledger.report(["tenant"], everything)["total"]["unattributed_cost_nano_usd"] == by_tenant["(unattributed)"]
        # top traces agree with the per-span sums too
        top = ledger.top(everything, limit=5)["traces"][0]
        span_sum = sum(
            s.attributes.get(a.TOKENTRAIL_COST_NANO_USD, 0) for s in spans if format(s.context.trace_id, "032x") == top["trace_id"]
        )
        assert top["cost_nano_usd"] == span_sum
        assert ledger.trace(top["trace_id"][:12])["cost_nano_usd"] == span_sum


def test_reexporting_a_span_does_not_double_count(tmp_path):
    spans = make_spans(5)
    exporter = LedgerSpanExporter(str(tmp_path / "l.db"))
    exporter.export(spans)
    exporter.export(spans)
    with Ledger(str(tmp_path / "l.db")) as ledger:
        total = ledger.report(["tenant"], Period.parse(None, None))["total"]
    assert total["cost_nano_usd"] == sum(s.attributes.get(a.TOKENTRAIL_COST_NANO_USD, 0) for s in spans)


def test_unpriced_and_no_usage_calls_have_no_cost_not_zero(tmp_path):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("chat mystery", attributes={
        a.GEN_AI_PROVIDER_NAME: "openai", a.GEN_AI_REQUEST_MODEL: "my-private-model",
        a.GEN_AI_USAGE_INPUT_TOKENS: 100, a.GEN_AI_USAGE_OUTPUT_TOKENS: 5, a.TOKENTRAIL_COST_STATUS: "unpriced"}):
        pass
    with tracer.start_as_current_span("chat failed", attributes={
        a.GEN_AI_PROVIDER_NAME: "openai", a.GEN_AI_REQUEST_MODEL: "gpt-4o", a.ERROR_TYPE: "RateLimitError",
        a.TOKENTRAIL_COST_STATUS: "no_usage"}) as span:
        span.set_status(StatusCode.ERROR)
    path = str(tmp_path / "l.db")
    LedgerSpanExporter(path).export(memory.get_finished_spans())
    rows = sqlite3.connect(path).execute("SELECT cost_status, cost_nano, status, error_type FROM spans ORDER BY id").fetchall()
    assert rows == [("unpriced", None, 0, None), ("no_usage", None, 2, "RateLimitError")]
    with Ledger(path) as ledger:
        total = ledger.report(["model"], Period.parse(None, None))["total"]
    assert total["calls"] == 2 and (total["unpriced_calls"], total["no_usage_calls"]) == (1, 1)
    assert total["cost_nano_usd"] is None  # nothing could be priced: unknown, never $0


def test_foreign_llm_span_without_cost_is_priced_on_the_way_in(tmp_path):
    """A span from another instrumentation that nobody priced (no tokentrail processors) still gets its cost."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("chat gpt-4o", attributes={
        a.GEN_AI_SYSTEM: "openai", a.GEN_AI_REQUEST_MODEL: "gpt-4o",
        a.GEN_AI_USAGE_INPUT_TOKENS: 2000, a.GEN_AI_USAGE_OUTPUT_TOKENS: 500}):
        pass
    path = str(tmp_path / "l.db")
    LedgerSpanExporter(path).export(memory.get_finished_spans())
    row = sqlite3.connect(path).execute("SELECT cost_status, cost_nano FROM spans").fetchone()
    assert row == ("priced", 10_000_000)  # GPT-4o 2,000 in / 500 out = $0.0100



def test_usage_that_does_not_add_up_is_no_usage_without_token_counts(tmp_path):
    """More cache reads than input tokens: no cost and no tokens (was: a cache-hit ratio of 500%)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("chat gpt-4o", attributes={
        a.GEN_AI_SYSTEM: "openai", a.GEN_AI_REQUEST_MODEL: "gpt-4o", a.GEN_AI_USAGE_INPUT_TOKENS: 10,
        a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 50, a.GEN_AI_USAGE_OUTPUT_TOKENS: 5}):
        pass
    with provider.get_tracer("t").start_as_current_span("chat claude", attributes={
        a.GEN_AI_SYSTEM: "anthropic", a.GEN_AI_REQUEST_MODEL: "claude-sonnet-4-20250514",
        a.GEN_AI_USAGE_INPUT_TOKENS: 10_000, a.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 10_000,
        a.GEN_AI_USAGE_OUTPUT_TOKENS: 0}):
        pass
    path = str(tmp_path / "l.db")
    LedgerSpanExporter(path).export(memory.get_finished_spans())
    rows = sqlite3.connect(path).execute(
        "SELECT cost_status, cost_nano, input_tokens, cache_read_tokens, cache_write_tokens FROM spans ORDER BY id"
    ).fetchall()
    assert rows == [
        ("no_usage", None, None, None, None),
        # the older cache-creation attribute is read as cache writes: 10,000 x $3.75/M
        ("priced", 37_500_000, 10_000, 0, 10_000),
    ]


# --- concurrency and failure -----------------------------------------------------------------
def _worker(path: str, worker: int, n: int) -> None:
    # A web-app worker: its own TracerProvider, a BatchSpanProcessor in front of the ledger exporter.
    exporter = LedgerSpanExporter(path)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64, schedule_delay_millis=5))
    tracer = provider.get_tracer("w")
    for i in range(n):
        with tracer.start_as_current_span("chat", attributes={
            a.GEN_AI_PROVIDER_NAME: "openai", a.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            a.GEN_AI_USAGE_INPUT_TOKENS: 10, a.GEN_AI_USAGE_OUTPUT_TOKENS: 1,
            a.TOKENTRAIL_COST_STATUS: "priced", a.TOKENTRAIL_COST_NANO_USD: 1000 * worker + i,
            a.TOKENTRAIL_TENANT: f"tenant-{worker}"}):
            pass
    provider.shutdown()
    if exporter.dropped:
        raise SystemExit(f"worker {worker} dropped {exporter.dropped}")


@pytest.mark.slow  # four writer processes
def test_four_processes_write_at_once_without_loss(tmp_path):
    path = str(tmp_path / "shared.db")
    ctx = multiprocessing.get_context("spawn")
    n = 600
    procs = [ctx.Process(target=_worker, args=(path, w, n)) for w in range(1, 5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with Ledger(path) as ledger:
        rows = {r["tenant"]: r for r in ledger.report(["tenant"], Period.parse(None, None))["rows"]}
    for w in range(1, 5):
        assert rows[f"tenant-{w}"]["calls"] == n
        assert rows[f"tenant-{w}"]["cost_nano_usd"] == sum(1000 * w + i for i in range(n))
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_locked_ledger_degrades_to_counted_drops_logged_once(tmp_path, caplog):
    path = str(tmp_path / "l.db")
    exporter = LedgerSpanExporter(path, busy_timeout_ms=50)
    spans = make_spans(3)
    assert exporter.export(spans[:1]).name == "SUCCESS"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    with caplog.at_level(logging.WARNING, logger="tokentrail.ledger"):
        first = exporter.export(spans)
        second = exporter.export(spans)
    assert first.name == second.name == "FAILURE"
    assert exporter.dropped == 2 * len(spans)
    assert len([r for r in caplog.records if "dropping spans" in r.getMessage()]) == 1
    other.execute("ROLLBACK")
    other.close()
    assert exporter.export(spans).name == "SUCCESS"  # recovers once the lock is gone
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM spans").fetchone()[0] == len(spans)


def test_full_disk_degrades_to_counted_drops(tmp_path):
    path = str(tmp_path / "l.db")
    exporter = LedgerSpanExporter(path)
    exporter.export(make_spans(1))
    # Simulate a full disk: the database may not grow by a single page more.
    conn = exporter._writer._connection()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    spans = make_spans(300, seed=9)
    assert exporter.export(spans).name == "FAILURE"
    assert exporter.dropped == len(spans)


def test_unusable_path_and_newer_schema_are_drops_not_exceptions(tmp_path):
    exporter = LedgerSpanExporter(str(tmp_path))  # a directory, not a file
    spans = make_spans(2)
    assert exporter.export(spans).name == "FAILURE"
    assert exporter.dropped == len(spans)

    newer = str(tmp_path / "newer.db")
    sqlite3.connect(newer).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    exporter = LedgerSpanExporter(newer)
    assert exporter.export(spans).name == "FAILURE"
    assert exporter.dropped == len(spans)
    exporter.shutdown()
    assert exporter.export(spans).name == "FAILURE"  # after shutdown: dropped, never raised


def test_behind_a_batch_processor_the_app_never_sees_ledger_errors(tmp_path):
    exporter = LedgerSpanExporter(str(tmp_path))  # unusable
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for _ in range(10):
        with tracer.start_as_current_span("x"):
            pass
    provider.shutdown()
    assert exporter.dropped == 10


# --- schema versions -------------------------------------------------------------------------
def test_older_ledger_is_migrated_and_keeps_its_rows(tmp_path):
    path = str(tmp_path / "old.db")
    conn = schema.connect(path, target=1)  # what an older tokentrail wrote
    conn.close()
    # rows as an older tokentrail wrote them, straight into the v1 table
    from tokentrail.ledger.rows import span_to_row

    spans = make_spans(5)
    raw = sqlite3.connect(path)
    v1 = schema.V1_COLUMNS
    raw.executemany(f"INSERT INTO spans ({', '.join(v1)}) VALUES ({', '.join('?' * len(v1))})",
                    [span_to_row(s)[:len(v1)] for s in spans])
    raw.commit()
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
    raw.close()
    with Ledger(path) as ledger:
        assert ledger.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        total = ledger.report(["tenant"], Period.parse(None, None))["total"]
        indexes = {r[0] for r in ledger.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert total["cost_nano_usd"] == sum(s.attributes.get(a.TOKENTRAIL_COST_NANO_USD, 0) for s in spans)
    assert {"spans_report", "spans_owner"} <= indexes


def test_newer_ledger_is_refused_with_a_clear_message(tmp_path):
    path = str(tmp_path / "new.db")
    sqlite3.connect(path).execute("PRAGMA user_version = 99")
    with pytest.raises(LedgerTooNew, match="newer than this tokentrail understands.*upgrade tokentrail"):
        Ledger(path)


def test_default_path_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_LEDGER", str(tmp_path / "env.db"))
    exporter = LedgerSpanExporter()
    exporter.export(make_spans(1))
    assert os.path.exists(tmp_path / "env.db")


def test_exporter_is_registered_for_otel_traces_exporter():
    from importlib.metadata import entry_points

    (ep,) = entry_points(group="opentelemetry_traces_exporter", name="tokentrail_ledger")
    assert ep.load() is LedgerSpanExporter


def test_both_query_plans_give_identical_reports(tmp_path):
    """Reports by tenant(/feature) over long periods read the owner index; others the time index."""
    spans = make_spans(300, seed=5, calls_per_trace=4)
    path = str(tmp_path / "l.db")
    LedgerSpanExporter(path).export(spans)
    starts = sorted(s.start_time for s in spans)
    middle = starts[len(starts) // 2]
    with Ledger(path) as owner_plan, Ledger(path) as time_plan:
        time_plan._owner_index_fits = lambda *args, **kw: False
        for by in (["tenant"], ["tenant", "feature"]):
            for period in (Period(None, starts[-1] + 1), Period(middle, starts[-1] + 1), Period(starts[0], middle)):
                assert owner_plan._owner_index_fits(by, period, [])
                a, b = owner_plan.report(by, period), time_plan.report(by, period)
                assert a["rows"] == b["rows"] and a["total"] == b["total"]
            where = [("tenant", "acme")]
            assert owner_plan.report(by, Period(None, starts[-1] + 1), where)["rows"] == \
                time_plan.report(by, Period(None, starts[-1] + 1), where)["rows"]


def test_a_forked_worker_opens_its_own_connection(tmp_path):
    """Pre-forking servers: the parent wrote before fork(); each child must not reuse its connection."""
    path = str(tmp_path / "l.db")
    exporter = LedgerSpanExporter(path)
    exporter.export(make_spans(1, seed=1))
    parent_conn = exporter._writer._conn
    pid = os.fork()
    if pid == 0:  # child
        ok = exporter._writer._conn is None and exporter.export(make_spans(2, seed=2)).name == "SUCCESS"
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert exporter._writer._conn is parent_conn
    assert exporter.export(make_spans(3, seed=3)).name == "SUCCESS"
    assert sqlite3.connect(path).execute("SELECT COUNT(DISTINCT trace_id) FROM spans").fetchone()[0] == 6


def test_read_only_ledger_degrades_to_counted_drops(tmp_path):
    path = tmp_path / "ro.db"
    first = LedgerSpanExporter(str(path))
    first.export(make_spans(1))
    first.shutdown()
    # chmod is enough for a normal user; root ignores it, so make the file immutable instead.
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a file read-only for root here (no chattr)")
        undo = ["chattr", "-i", str(path)]
    else:
        path.chmod(0o444)
        undo = ["chmod", "644", str(path)]
    try:
        exporter = LedgerSpanExporter(str(path))
        spans = make_spans(4, seed=3)
        assert exporter.export(spans).name == "FAILURE"
        assert exporter.dropped == len(spans)
        with Ledger(str(path)) as ledger:  # still readable for reports
            assert ledger.report(["tenant"], Period.parse(None, None))["total"]["calls"] > 0
    finally:
        subprocess.run(undo, check=True)
