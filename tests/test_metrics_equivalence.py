"""The metric data a reader collects for a fixed real workload, exactly: every metric's name,
unit, kind, attribute sets, values (counter sums; histogram count, sum, min, max and bucket
counts) and exemplars (the trace and span they link to).

The expected set is computed here from the workload (scripted usage, published prices, the
exported spans' own ids and times), not read back from the code under test, so it pins what
a dashboard or an alert reads while the recording underneath changes (issue 11: counters
counters and histograms summed by tokentrail, added to the SDK's aggregations at collection). Real openai and anthropic SDKs over
HTTP to the fake provider, through InMemoryPipeline or an SDK pipeline built here.
"""

from __future__ import annotations

import bisect
import json
from urllib.parse import urlsplit
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tokentrail
from tokentrail import state
from tokentrail.instrumentation.anthropic import AnthropicInstrumentor
from tokentrail.instrumentation.openai import OpenAIInstrumentor
from tokentrail.processor.attribution import AttributionSpanProcessor
from tokentrail.processor.cost import CostSpanProcessor
from tokentrail.processor.metrics import COST_BUCKETS_USD, DURATION_BUCKETS_S, TOKEN_BUCKETS, metric_views
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as m
from tokentrail.testing import anthropic_api, openai_api
from tokentrail.testing.server import FakeResponse

OPENAI_MODEL = "gpt-5.4-mini"  # $0.75 / $0.075 cached / $4.50 per M
FALLBACK_MODEL = "gpt-4o"  # $2.50 / $1.25 cached / $10 per M
CLAUDE = "claude-sonnet-4-20250514"  # $3 / $15 per M, cache reads 0.1x, 5-minute writes 1.25x
SELF_HOSTED = "acme-llama-70b"  # on no rate card
MESSAGES = [{"role": "user", "content": "Summarise the quarterly report for me."}]
M_ = Decimal(1_000_000)
OWNER = {"tenant": attr.TOKENTRAIL_TENANT, "feature": attr.TOKENTRAIL_FEATURE, "team": attr.TOKENTRAIL_TEAM}

# USD per token: (fresh input, cache read, cache write, output)
RATES = {
    OPENAI_MODEL: (Decimal("0.75") / M_, Decimal("0.075") / M_, None, Decimal("4.50") / M_),
    FALLBACK_MODEL: (Decimal("2.50") / M_, Decimal("1.25") / M_, None, Decimal("10") / M_),
    CLAUDE: (Decimal(3) / M_, Decimal("0.3") / M_, Decimal("3.75") / M_, Decimal(15) / M_),
}

# One call of the workload: who, what, and the usage the fake provider reports.
# kind: "chat" | "stream" (openai), "messages" | "messages-stream" (anthropic)
WORKLOAD: list[dict[str, Any]] = [
    dict(kind="chat", model=OPENAI_MODEL, owner=dict(tenant="acme", feature="summarize"),
         input=10_000, cache_read=2_000, output=1_200),  # USERS.md: $0.01155
    dict(kind="chat", model=OPENAI_MODEL, owner=dict(tenant="acme", feature="summarize"),
         input=10_000, cache_read=2_000, output=1_200),
    dict(kind="chat", model=OPENAI_MODEL, owner=dict(tenant="globex", feature="search", team="growth"),
         input=1_000, output=500, reasoning=300),
    dict(kind="stream", model=OPENAI_MODEL, owner=dict(tenant="acme", feature="summarize"),
         input=2_000, cache_read=500, output=200),
    dict(kind="messages", model=CLAUDE, owner=dict(tenant="acme", team="support"),
         input=8_000, output=1_200),  # USERS.md: $0.042
    dict(kind="messages-stream", model=CLAUDE, owner=dict(tenant="initech", feature="faq"),
         input=1_000, cache_read=7_000, cache_write=3_000, output=500),
    dict(kind="chat", model=OPENAI_MODEL, owner=dict(tenant="acme", feature="summarize"), retry=1,
         input=10_000, cache_read=2_000, output=1_200),
    dict(kind="chat", model=FALLBACK_MODEL, owner=dict(tenant="globex", feature="search"),
         fallback=OPENAI_MODEL, input=2_000, output=500),  # USERS.md: $0.0100
    dict(kind="chat", model=SELF_HOSTED, owner=dict(tenant="acme", feature="summarize"),
         input=3_000, output=300),  # unpriced
    dict(kind="chat", model=OPENAI_MODEL, owner={}, input=400, output=40),  # nobody's: unattributed
    dict(kind="chat", model=OPENAI_MODEL, owner=dict(tenant="acme"), error=429),  # no usage, error.type
]


# --- what a reader holds, normalised --------------------------------------------------------
def _r(value: Any) -> Any:
    # Sums of floats to 1e-12 (USD to far below the nano-dollar, seconds to the nanosecond): the
    # SDK adds a collection's values to the previous total, so the last bit depends on when
    # collections happened, which no backend can see.
    return round(value, 12) if isinstance(value, float) else value


def _exemplars(point) -> tuple:
    return tuple(sorted((e.trace_id, e.span_id, _r(e.value)) for e in point.exemplars or ()))


def collected(reader) -> dict[tuple, dict[str, Any]]:
    """(metric name, unit, attribute set) -> what a backend stores for that series."""
    out: dict[tuple, dict[str, Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, metric.unit, frozenset(point.attributes.items()))
                    assert key not in out, key
                    if hasattr(point, "bucket_counts"):
                        out[key] = dict(kind="histogram", count=point.count, sum=_r(point.sum),
                                        min=_r(point.min), max=_r(point.max), bounds=tuple(point.explicit_bounds),
                                        buckets=tuple(point.bucket_counts), exemplars=_exemplars(point))
                    else:
                        out[key] = dict(kind="sum", monotonic=metric.data.is_monotonic,
                                        temporality=metric.data.aggregation_temporality,
                                        value=_r(point.value), exemplars=_exemplars(point))
    return out


# --- the workload through the real SDKs -----------------------------------------------------
def _openai_reply(call: dict[str, Any]) -> dict[str, Any]:
    return dict(prompt_tokens=call["input"], cached_tokens=call.get("cache_read", 0),
                completion_tokens=call["output"], reasoning_tokens=call.get("reasoning", 0),
                chunk_count=4)


def _run_call(server, oai, claude, call: dict[str, Any]) -> None:
    kind = call["kind"]
    if kind in ("chat", "stream"):
        if "error" in call:
            server.enqueue(openai_api.error(call["error"], "slow down", type="rate_limit_error"))
            with pytest.raises(openai.RateLimitError):
                oai.chat.completions.create(model=call["model"], messages=MESSAGES)
            return
        headers = {openai_api.HEADER: json.dumps(_openai_reply(call))}
        if kind == "chat":
            oai.chat.completions.create(model=call["model"], messages=MESSAGES, extra_headers=headers)
        else:
            for _ in oai.chat.completions.create(model=call["model"], messages=MESSAGES, stream=True,
                                                 extra_headers=headers):
                pass
        return
    usage = anthropic_api.usage_block(call["input"], call["output"],
                                      cache_read_input_tokens=call.get("cache_read", 0),
                                      cache_creation_5m=call.get("cache_write", 0))
    if kind == "messages":
        server.enqueue(FakeResponse(json=anthropic_api.message(model=call["model"], usage=usage)))
        claude.messages.create(model=call["model"], max_tokens=2048, messages=MESSAGES)
    else:
        server.enqueue(FakeResponse(sse=anthropic_api.message_events(model=call["model"], usage=usage)))
        for _ in claude.messages.create(model=call["model"], max_tokens=2048, messages=MESSAGES, stream=True):
            pass


def run_workload(server, calls: list[dict[str, Any]]) -> None:
    with openai.OpenAI(base_url=openai_api.base_url(server), api_key="k", max_retries=0) as oai, \
            anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0) as claude:
        for call in calls:
            with tokentrail.attribute(**call["owner"]):
                if "retry" in call:
                    with tokentrail.retry(call["retry"]):
                        _run_call(server, oai, claude, call)
                elif "fallback" in call:
                    with tokentrail.fallback(call["fallback"]):
                        _run_call(server, oai, claude, call)
                else:
                    _run_call(server, oai, claude, call)


# --- the expected set, from the workload ---------------------------------------------------
def _usd(call: dict[str, Any]) -> Decimal | None:
    rates = RATES.get(call["model"])
    if rates is None or "error" in call:
        return None
    fresh, read, write, out = rates
    cache_read, cache_write = call.get("cache_read", 0), call.get("cache_write", 0)
    # openai's prompt_tokens include the cached ones; anthropic's input_tokens exclude both cache parts
    uncached = call["input"] - cache_read if call["kind"] in ("chat", "stream") else call["input"]
    total = uncached * fresh + cache_read * read + call["output"] * out
    if cache_write:
        total += cache_write * write
    return total


def _savings(call: dict[str, Any]) -> float | None:
    rates = RATES.get(call["model"])
    if rates is None or not call.get("cache_read"):
        return None
    return float(call["cache_read"] * (rates[0] - rates[1]))


class Expected:
    """A tiny independent aggregator: what the SDK must hold after these calls."""

    def __init__(self) -> None:
        self.series: dict[tuple, dict[str, Any]] = {}

    def add(self, name: str, unit: str, attributes: dict[str, Any], value: float | int,
            temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE) -> None:
        key = (name, unit, frozenset(attributes.items()))
        found = self.series.setdefault(key, dict(kind="sum", monotonic=True, temporality=temporality, value=0,
                                                 exemplars=()))
        found["value"] += value

    def record(self, name: str, unit: str, attributes: dict[str, Any], value: float, bounds: tuple,
               exemplar: tuple | None = None) -> None:
        key = (name, unit, frozenset(attributes.items()))
        found = self.series.setdefault(key, dict(kind="histogram", count=0, sum=0, min=value, max=value,
                                                 bounds=tuple(float(b) for b in bounds),
                                                 buckets=[0] * (len(bounds) + 1), exemplars={}))
        found["count"] += 1
        found["sum"] += value
        found["min"], found["max"] = min(found["min"], value), max(found["max"], value)
        bucket = bisect.bisect_left(bounds, value)
        found["buckets"][bucket] += 1
        if exemplar is not None:  # the SDK keeps the last exemplar of each bucket
            found["exemplars"][bucket] = (*exemplar, _r(value))

    def unpriced(self, attributes: dict[str, Any], exemplar: tuple | None) -> None:
        key = (m.TOKENTRAIL_CALLS_UNPRICED, "{call}", frozenset(attributes.items()))
        found = self.series.setdefault(key, dict(kind="sum", monotonic=True,
                                                 temporality=AggregationTemporality.CUMULATIVE, value=0,
                                                 exemplars=[]))
        found["value"] += 1
        if exemplar is not None:
            found["exemplars"] = [(*exemplar, 1)]  # the SimpleFixedSizeExemplarReservoir keeps it

    def done(self) -> dict[tuple, dict[str, Any]]:
        out = {}
        for key, value in self.series.items():
            value = {k: _r(v) for k, v in value.items()}
            if value["kind"] == "histogram":
                value["buckets"] = tuple(value["buckets"])
                value["exemplars"] = tuple(sorted(value["exemplars"].values()))
            else:
                value["exemplars"] = tuple(sorted(value["exemplars"]))
            out[key] = value
        return out


def expected_for(calls: list[dict[str, Any]], spans: list[Any], *, latest: bool, port: int,
                 environment: str | None = None, collected_before: int = 0) -> dict[tuple, dict[str, Any]]:
    """``collected_before``: calls already collected once (the SDK's exemplar reservoirs are
    emptied by each collection, so only the later calls' exemplars show)."""
    assert len(spans) == len(calls)
    exp = Expected()
    for index, (call, span) in enumerate(zip(calls, spans)):
        provider = "openai" if call["kind"] in ("chat", "stream") else "anthropic"
        usd = _usd(call)
        status = "priced" if usd is not None else ("no_usage" if "error" in call else "unpriced")
        owner = {OWNER[k]: v for k, v in call["owner"].items()}
        point = {attr.GEN_AI_PROVIDER_NAME: provider, attr.GEN_AI_REQUEST_MODEL: call["model"],
                 attr.GEN_AI_OPERATION_NAME: "chat", attr.TOKENTRAIL_COST_STATUS: status,
                 attr.TOKENTRAIL_ATTRIBUTED: "tenant" in call["owner"],
                 **owner}
        upstream = {attr.GEN_AI_PROVIDER_NAME: provider, attr.GEN_AI_REQUEST_MODEL: call["model"],
                    attr.GEN_AI_OPERATION_NAME: "chat", attr.SERVER_ADDRESS: "127.0.0.1", attr.SERVER_PORT: port}
        if environment:
            point[attr.DEPLOYMENT_ENVIRONMENT_NAME] = upstream[attr.DEPLOYMENT_ENVIRONMENT_NAME] = environment
        if "error" in call:
            point[attr.ERROR_TYPE] = upstream[attr.ERROR_TYPE] = "RateLimitError"
        link = (span.context.trace_id, span.context.span_id) if index >= collected_before else None
        if status == "priced":
            cost = float(usd)
            exp.record(m.TOKENTRAIL_COST, "USD", point, cost, COST_BUCKETS_USD, link)
            if call.get("retry"):
                exp.add(m.TOKENTRAIL_COST_RETRIES, "USD", point, cost)
            if call.get("fallback"):
                exp.add(m.TOKENTRAIL_COST_FALLBACKS, "USD", point, cost)
            saved = _savings(call)
            if saved is not None:
                exp.add(m.TOKENTRAIL_CACHE_SAVINGS, "USD", point, saved)
        elif status == "unpriced":
            exp.unpriced(point, link)
        if "error" not in call:
            tokens = {k: v for k, v in point.items() if k != attr.ERROR_TYPE}
            read, write = call.get("cache_read", 0), call.get("cache_write", 0)
            fresh = call["input"] - read if provider == "openai" else call["input"]
            for token_type, count in (("input", fresh), ("cache_read", read), ("cache_write", write),
                                      ("output", call["output"]), ("reasoning", call.get("reasoning", 0))):
                if count or token_type in ("input", "output"):
                    exp.add(m.TOKENTRAIL_TOKENS, "{token}", {**tokens, attr.TOKENTRAIL_TOKEN_TYPE: token_type}, count)
            # upstream counts every input token (anthropic: the cache parts too)
            all_input = call["input"] if provider == "openai" else call["input"] + read + write
            if latest:
                exp.record(m.GEN_AI_CLIENT_INFERENCE_OPERATION_INPUT_TOKENS, "{token}", upstream, all_input,
                           TOKEN_BUCKETS)
                exp.record(m.GEN_AI_CLIENT_INFERENCE_OPERATION_OUTPUT_TOKENS, "{token}", upstream,
                           call["output"], TOKEN_BUCKETS)
            else:
                for token_type, count in (("input", all_input), ("output", call["output"])):
                    exp.record(m.GEN_AI_CLIENT_TOKEN_USAGE, "{token}",
                               {**upstream, attr.GEN_AI_TOKEN_TYPE: token_type}, count, TOKEN_BUCKETS)
        duration = (span.end_time - span.start_time) / 1e9
        name = m.GEN_AI_CLIENT_INFERENCE_DURATION if latest else m.GEN_AI_CLIENT_OPERATION_DURATION
        exp.record(name, "s", upstream, duration, DURATION_BUCKETS_S, link)
    return exp.done()


def _port(server) -> int:
    return urlsplit(server.url).port


def llm_spans(spans) -> list[Any]:
    ours = [s for s in spans if s.instrumentation_scope.name.startswith("tokentrail.instrumentation")]
    return sorted(ours, key=lambda s: s.start_time)


# --- the tests ------------------------------------------------------------------------------
def _diff(got: dict, want: dict) -> str:
    lines = [f"missing {k}: {want[k]}" for k in want.keys() - got.keys()]
    lines += [f"unexpected {k}: {got[k]}" for k in got.keys() - want.keys()]
    lines += [f"differs {k}:\n  got  {got[k]}\n  want {want[k]}" for k in want.keys() & got.keys() if got[k] != want[k]]
    return "\n".join(lines)


@pytest.mark.parametrize("latest", [False, True], ids=["default-semconv", "latest-semconv"])
def test_reader_holds_exactly_the_workloads_metrics(server, make_pipeline, monkeypatch, latest):
    if latest:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    else:
        monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    pipeline = make_pipeline(resource_attributes={attr.DEPLOYMENT_ENVIRONMENT_NAME: "prod"})
    half = len(WORKLOAD) // 2
    # cumulative: the first collection holds the first half, the second everything
    run_workload(server, WORKLOAD[:half])
    first = collected(pipeline.reader)
    want = expected_for(WORKLOAD[:half], llm_spans(pipeline.spans()), latest=latest, port=_port(server),
                        environment="prod")
    assert first == want, _diff(first, want)
    run_workload(server, WORKLOAD[half:])
    got = collected(pipeline.reader)
    want = expected_for(WORKLOAD, llm_spans(pipeline.spans()), latest=latest, port=_port(server), environment="prod",
                        collected_before=half)
    assert got == want, _diff(got, want)
    # the worked numbers, spelled out: two acme summaries plus the streamed one
    acme = [k for k in got if k[0] == m.TOKENTRAIL_COST and (attr.TOKENTRAIL_FEATURE, "summarize") in k[2]
            and (attr.TOKENTRAIL_COST_STATUS, "priced") in k[2]]
    assert [got[k]["count"] for k in acme] == [4]
    assert got[acme[0]]["sum"] == 0.0367125  # 3 x $0.01155 + $0.0020625


def test_a_cardinality_limit_overflows_as_the_sdk_does(server, make_pipeline):
    pipeline = make_pipeline(cardinality_limit=3)
    calls = [dict(kind="chat", model=OPENAI_MODEL, owner=dict(tenant=f"tenant-{i}"), input=1_000 + i, output=10)
             for i in range(6)]
    run_workload(server, calls)
    got = collected(pipeline.reader)
    overflow = frozenset({("otel.metric.overflow", True)})
    tokens = {k[2]: v["value"] for k, v in got.items() if k[0] == m.TOKENTRAIL_TOKENS}
    # the first three attribute sets seen keep their series (tenant-0 input and output, tenant-1
    # input), everything after lands in the overflow series: nothing is lost
    assert len(tokens) == 4 and tokens[overflow] == sum(1_000 + i + 10 for i in range(6)) - 1_000 - 10 - 1_001
    assert sum(tokens.values()) == sum(1_000 + i + 10 for i in range(6))
    costs = {k[2]: v["count"] for k, v in got.items() if k[0] == m.TOKENTRAIL_COST}
    assert len(costs) == 4 and costs[overflow] == 3
    # later collections keep the same series (cumulative)
    run_workload(server, calls[:1])
    again = {k[2]: v["value"] for k, v in collected(pipeline.reader).items() if k[0] == m.TOKENTRAIL_TOKENS}
    assert again.keys() == tokens.keys()
    assert again[frozenset({**{a: b for a, b in next(iter(k for k in tokens if k != overflow))}}.items())] >= 1_000


def _sdk_pipeline(reader) -> tuple[TracerProvider, InMemorySpanExporter, MeterProvider, list[Any]]:
    meter_provider = MeterProvider(metric_readers=[reader], views=metric_views(), shutdown_on_exit=False)
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    tracer_provider.add_span_processor(AttributionSpanProcessor())
    tracer_provider.add_span_processor(CostSpanProcessor(SimpleSpanProcessor(exporter), meter_provider=meter_provider))
    instrumentors = [OpenAIInstrumentor(), AnthropicInstrumentor()]
    for inst in instrumentors:
        if inst.is_instrumented_by_opentelemetry:
            inst.uninstrument()
        inst.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, skip_dep_check=True)
    return tracer_provider, exporter, meter_provider, instrumentors


def test_a_delta_reader_sees_each_collections_increments_only(server, monkeypatch):
    """An OTLP exporter asking for delta temporality: a series appears only in the collections in
    which it changed, with the change, as a synchronous counter reports it."""
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    delta = AggregationTemporality.DELTA
    reader = InMemoryMetricReader(preferred_temporality={Counter: delta, Histogram: delta, ObservableCounter: delta})
    state.reset()
    server.reset()
    tracer_provider, exporter, meter_provider, instrumentors = _sdk_pipeline(reader)
    try:
        calls = WORKLOAD[:2] + WORKLOAD[2:3]
        run_workload(server, calls[:2])  # acme twice
        first = {k: v for k, v in collected(reader).items() if k[0] == m.TOKENTRAIL_TOKENS}
        run_workload(server, calls[2:])  # globex once
        second = {k: v for k, v in collected(reader).items() if k[0] == m.TOKENTRAIL_TOKENS}
        assert first and all((attr.TOKENTRAIL_TENANT, "acme") in k[2] for k in first)
        assert {v["value"] for k, v in first.items() if (attr.TOKENTRAIL_TOKEN_TYPE, "input") in k[2]} == {16_000}
        # the second collection: globex's increments only, acme's unchanged series are absent
        assert second and all((attr.TOKENTRAIL_TENANT, "globex") in k[2] for k in second)
        assert all(v["temporality"] is delta for v in second.values())
        by_type = {dict(k[2])[attr.TOKENTRAIL_TOKEN_TYPE]: v["value"] for k, v in second.items()}
        assert by_type == {"input": 1_000, "output": 500, "reasoning": 300}
    finally:
        for inst in instrumentors:
            inst.uninstrument()
        tracer_provider.shutdown()
        meter_provider.shutdown()
        state.reset()


def test_a_reset_keeps_the_counters_of_a_running_meter_provider(server, make_pipeline):
    """tokentrail.state.reset() (tests, InMemoryPipeline) forgets what tokentrail remembered, but a
    MeterProvider still in use keeps reporting every call once, with no duplicate series."""
    pipeline = make_pipeline()
    calls = WORKLOAD[:1]
    run_workload(server, calls)
    state.reset()
    run_workload(server, calls)
    got = collected(pipeline.reader)
    tokens = {dict(k[2])[attr.TOKENTRAIL_TOKEN_TYPE]: v["value"] for k, v in got.items() if k[0] == m.TOKENTRAIL_TOKENS}
    assert tokens == {"input": 16_000, "cache_read": 4_000, "output": 2_400}
    [cost] = [v for k, v in got.items() if k[0] == m.TOKENTRAIL_COST]
    assert cost["count"] == 2 and cost["sum"] == 0.01155 + 0.01155


def test_counters_stay_bounded_past_their_cap_and_lose_nothing():
    """Past its cap (never below the SDK's cardinality limit) a Sum sums new attribute sets as
    the SDK's overflow series, so a noisy dimension cannot grow the process's memory."""
    from tokentrail.processor import sdk
    from tokentrail.processor.metrics import Sum

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    totals = Sum(provider.get_meter("tokentrail").create_counter("tokentrail.tokens"), sdk.measurement_consumer(provider),
                 sdk.exemplar_filter(provider), cap=3)
    for i in range(10):
        totals.add(i + 1, {attr.TOKENTRAIL_TENANT: f"t{i}"})
    totals.add(100, {attr.TOKENTRAIL_TENANT: "t0"})  # a set with a series of its own keeps it
    assert len(totals._series) == 4
    totals.flush()  # built here without the provider's collection callback
    observed = {tuple(sorted(p.attributes.items())): p.value for rm in reader.get_metrics_data().resource_metrics
                for sm in rm.scope_metrics for m in sm.metrics for p in m.data.data_points}
    assert observed == {((attr.TOKENTRAIL_TENANT, "t0"),): 101, ((attr.TOKENTRAIL_TENANT, "t1"),): 2,
                        ((attr.TOKENTRAIL_TENANT, "t2"),): 3, (("otel.metric.overflow", True),): sum(range(4, 11))}
