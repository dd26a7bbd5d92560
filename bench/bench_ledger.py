"""Ledger size and query speed at 1 million spans.

Builds a ledger of N spans (default 1,000,000: traces of one request span and three LLM calls,
spread over 60 days so ``--since 30d`` has a previous period to compare against), written in
batches through the ledger's own writer, then measures:

- bytes per LLM span (file size after a checkpoint / LLM spans);
- ``tokentrail report --by tenant,feature --since 30d`` run as a real subprocess (interpreter
  start-up and imports included), and the same query in-process;
- baselines from the same run: a full-table ``SELECT COUNT(*)`` scan and ``tokentrail --help``
  (start-up alone), so the figures can be read as ratios on any machine.

Usage:  python bench/bench_ledger.py [--spans N] [--keep PATH]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

from tokentrail.ledger.queries import Ledger, Period
from tokentrail.ledger.schema import COLUMNS
from tokentrail.ledger.writer import LedgerWriter

DAY_NS = 86400 * 10**9


def generate(writer: LedgerWriter, n_spans: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    now = time.time_ns()
    tenants = [f"tenant-{i:03d}" for i in range(200)] + [None] * 20  # ~9% unattributed
    features = ["search", "summarize", "chat", "extract", "classify", "agent", "rerank", "translate",
                "draft", "qa", "tagging", "support"]
    models = [("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"), ("openai", "gpt-4o", "gpt-4o-2024-08-06"),
              ("anthropic", "claude-sonnet-4", "claude-sonnet-4-20250514"), ("gcp.gemini", "gemini-2.5-flash", "gemini-2.5-flash")]
    card = "genai-prices-0.0.35+overlay-3f9a2c1d"
    index = {c: i for i, c in enumerate(COLUMNS)}
    batch: list[tuple] = []
    llm = 0
    written = 0
    # Spans reach the ledger roughly in time order, as an exporter delivers them.
    starts = sorted(now - rng.randrange(60 * DAY_NS) for _ in range(n_spans // 4 + 1))
    while written < n_spans:
        trace_id = f"{rng.getrandbits(128):032x}"
        root_id = f"{rng.getrandbits(64):016x}"
        start = starts[written // 4]
        tenant, feature = rng.choice(tenants), rng.choice(features)
        team = f"team-{features.index(feature) % 4}"
        user = f"u-{rng.randrange(5000)}"
        task = ("agent-run", f"{rng.getrandbits(64):016x}") if feature == "agent" else (None, None)
        base = [None] * len(COLUMNS)
        for col, value in (("trace_id", trace_id), ("tenant", tenant), ("feature", feature), ("team", team),
                           ("user_id", user), ("task_name", task[0]), ("task_id", task[1]), ("service", "api")):
            base[index[col]] = value
        root = list(base)
        for col, value in (("span_id", root_id), ("name", "POST /v1/answer"), ("kind", 1), ("start_ns", start),
                           ("end_ns", start + 900_000_000), ("status", 1)):
            root[index[col]] = value
        batch.append(tuple(root))
        written += 1
        for k in range(3):
            provider, model, response_model = rng.choice(models)
            inp = rng.randint(200, 12000)
            cread = rng.randint(0, inp)
            out = rng.randint(20, 1500)
            parts = [rng.randint(0, 9_000_000) for _ in range(3)]
            row = list(base)
            for col, value in (
                ("span_id", f"{rng.getrandbits(64):016x}"), ("parent_span_id", root_id), ("name", f"chat {model}"),
                ("kind", 2), ("start_ns", start + k * 250_000_000), ("end_ns", start + k * 250_000_000 + 240_000_000),
                ("status", 0), ("llm", 1), ("provider", provider), ("operation", "chat"), ("request_model", model),
                ("response_model", response_model), ("pricing_model", model), ("input_tokens", inp),
                ("output_tokens", out), ("cache_read_tokens", cread), ("cache_write_tokens", 0),
                ("cost_status", "priced"), ("cost_nano", sum(parts)), ("cost_input_nano", parts[0]),
                ("cost_cache_read_nano", parts[1]), ("cost_cache_write_nano", 0), ("cost_output_nano", parts[2]),
                ("cost_fees_nano", 0), ("rate_card_version", card), ("pricing_tier", "standard"),
                ("retry_attempt", 0),
            ):
                row[index[col]] = value
            batch.append(tuple(row))
            written += 1
            llm += 1
        if len(batch) >= 20000:
            assert writer.write(batch)
            batch = []
    assert writer.write(batch)
    return llm


def timed(fn, repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def child_timed(cmd: list[str], repeat: int = 5) -> tuple[float, float]:
    """Median wall and CPU (user + system) seconds of a child process."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def cpu_timed(fn, repeat: int = 5) -> float:
    """Median CPU seconds of this process and its threads (steadier than wall time on a busy machine)."""
    samples = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        samples.append(time.process_time() - t0)
    return statistics.median(samples)


def export_cost(n: int = 20_000, batch: int = 512) -> tuple[float, float]:
    """CPU µs per span of LedgerSpanExporter.export (row building + one transaction per batch of 512,
    the BatchSpanProcessor's default) against span.to_json() (what the console exporter does per span)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tokentrail.ledger import LedgerSpanExporter
    from tokentrail.semconv import attributes as a

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    attrs = {
        a.GEN_AI_PROVIDER_NAME: "openai", a.GEN_AI_OPERATION_NAME: "chat", a.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        a.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18", a.GEN_AI_USAGE_INPUT_TOKENS: 5000,
        a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 4096, a.GEN_AI_USAGE_OUTPUT_TOKENS: 300,
        a.TOKENTRAIL_COST_STATUS: "priced", a.TOKENTRAIL_COST_NANO_USD: 487_200, a.TOKENTRAIL_COST_INPUT: 0.0001356,
        a.TOKENTRAIL_COST_CACHE_READ: 0.0003072, a.TOKENTRAIL_COST_CACHE_WRITE: 0.0, a.TOKENTRAIL_COST_OUTPUT: 0.00018,
        a.TOKENTRAIL_COST_FEES: 0.0, a.TOKENTRAIL_RATE_CARD_VERSION: "genai-prices-0.2.3+ov.a97708d8",
        a.TOKENTRAIL_PRICING_TIER: "standard", a.TOKENTRAIL_TENANT: "acme", a.TOKENTRAIL_FEATURE: "support-chat",
        a.TOKENTRAIL_TEAM: "support", a.USER_ID: "u-42",
    }
    for _ in range(n):
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes=attrs):
            pass
    spans = list(memory.get_finished_spans())
    exporter = LedgerSpanExporter(os.path.join(tempfile.mkdtemp(prefix="tokentrail-bench-"), "export.db"))
    exporter.export(spans[:1])  # open and create the ledger outside the timing
    t0 = time.process_time()
    for i in range(0, n, batch):
        exporter.export(spans[i : i + batch])
    ledger_us = (time.process_time() - t0) / n * 1e6
    t0 = time.process_time()
    for span in spans:
        span.to_json()
    json_us = (time.process_time() - t0) / n * 1e6
    assert exporter.dropped == 0
    return ledger_us, json_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--keep", metavar="PATH", help="write the ledger here and keep it")
    args = parser.parse_args()
    path = args.keep or os.path.join(tempfile.mkdtemp(prefix="tokentrail-bench-"), "ledger.db")
    if os.path.exists(path):
        os.remove(path)

    t0 = time.perf_counter()
    writer = LedgerWriter(path)
    llm = generate(writer, args.spans)
    write_s = time.perf_counter() - t0
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(path)
    writer.close()

    scan = lambda: conn.execute("SELECT COUNT(*), SUM(length(trace_id)) FROM spans").fetchone()  # noqa: E731
    count_s = timed(scan)
    count_cpu = cpu_timed(scan)
    ledger = Ledger(path)
    period = Period.parse("30d", None)
    report = ledger.report(["tenant", "feature"], period)
    query = lambda: ledger.report(["tenant", "feature"], Period.parse("30d", None))  # noqa: E731
    query_s = timed(query)
    query_cpu = cpu_timed(query)
    cli = [sys.executable, "-m", "tokentrail.cli"]
    report_cmd = cli + ["report", "--by", "tenant,feature", "--since", "30d", "--ledger", path]
    cli_s, cli_cpu = child_timed(report_cmd)
    help_s, help_cpu = child_timed(cli + ["--help"])
    top_s = timed(lambda: ledger.top(Period.parse("7d", None)), repeat=3)
    tenants_s = timed(lambda: ledger.tenants(Period.parse("30d", None)), repeat=3)

    print(f"spans: {args.spans:,} ({llm:,} LLM calls), written in {write_s:.1f} s ({args.spans / write_s:,.0f} spans/s)")
    print(f"ledger size: {size / 2**20:.1f} MiB = {size / llm:.0f} bytes per LLM span ({size / args.spans:.0f} per span)")
    print(f"report rows: {len(report['rows'])}, calls in period: {report['total']['calls']:,}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"baseline full-table scan (COUNT, SUM(length(trace_id))): {count_s * 1000:7.0f} ms wall, {count_cpu * 1000:.0f} ms CPU")
    print(f"report --by tenant,feature --since 30d, in-process:      {query_s * 1000:7.0f} ms wall, {query_cpu * 1000:.0f} ms CPU"
          f"  ({query_s / count_s:.2f}x the scan's wall time, {query_cpu / count_cpu:.2f}x its CPU)")
    print(f"`tokentrail report ...` subprocess, end to end:    {cli_s * 1000:7.0f} ms wall, {cli_cpu * 1000:.0f} ms CPU"
          f"  (`tokentrail --help` alone: {help_s * 1000:.0f} ms wall, {help_cpu * 1000:.0f} ms CPU)")
    print(f"top --since 7d: {top_s * 1000:.0f} ms; tenants --since 30d: {tenants_s * 1000:.0f} ms")
    ledger.close()
    ledger_us, json_us = export_cost()
    print(f"export, CPU per span: LedgerSpanExporter.export {ledger_us:.1f} µs vs span.to_json() {json_us:.1f} µs"
          f" ({ledger_us / json_us:.2f}x), on the batch processor's thread")


if __name__ == "__main__":
    main()
