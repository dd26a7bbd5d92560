"""The real OpenTelemetry Collector (deploy/collector/build.sh) running collector-config.yaml.

The shipped file validates; a real workload (the openai SDK -> tokentrail -> OTLP) goes through both doors of one
Collector (the shipped config plus the test overlay: loopback ports, traces to a file instead of Tempo, a 2 s
decision wait). Cost-aware tail sampling keeps every trace the README promises and about 10% of the rest; the
untrusted door strips forged tokentrail.* attributes from spans and metric points; metrics stay exact whatever the
sampler drops.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import openai
import pytest
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.trace import StatusCode

from collector_fixtures import OVERLAY, SHIPPED_CONFIG, collector_binary, overlay_env, running_collector
from tokentrail import attribute, budgets, task
from tokentrail.dashboards import queries as q
from tokentrail.dashboards.promnames import label, prom
from tokentrail.errors import BudgetExceeded
from tokentrail.instrumentation.openai import OpenAIInstrumentor
from tokentrail.semconv import attributes as A
from tokentrail.semconv import generate
from tokentrail.semconv import metrics as M
from tokentrail.testing import InMemoryPipeline, fake_provider, openai_api
from tokentrail.testing.collector import read_spans, scrape, validate

pytestmark = pytest.mark.slow

NANO = 10**9
CALL_KEEP_NANO = 50_000_000  # every trace with an LLM call of at least $0.05
TASK_KEEP_NANO = 250_000_000  # every task of at least $0.25
BASELINE = 0.10
TRUSTED, EDGE, OTHER = "support-bot", "partner-agent", "other-sdk"
RECORD_POLICY = "processor.tailsamplingprocessor.recordpolicy"  # kept spans name the policy that kept them
POLICY = "tailsampling.policy"
N_CHEAP = 300
N_FORGED = 40


def test_the_shipped_config_validates():
    out = validate(collector_binary(), [SHIPPED_CONFIG])
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_test_overlay_validates(tmp_path):
    env, _, _ = overlay_env(tmp_path)
    out = validate(collector_binary(), [SHIPPED_CONFIG, OVERLAY], env)
    assert out.returncode == 0, out.stdout + out.stderr


# --- the workload -----------------------------------------------------------------------------------------
def _ask(client, model: str, input: int, output: int, **script) -> None:
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Summarise."}],
        extra_headers={openai_api.HEADER: json.dumps(
            {"prompt_tokens": input, "completion_tokens": output, **script})})


def trusted_workload(client) -> None:
    """Cheap calls, expensive calls (one exactly at $0.05), expensive tasks made of calls under $0.05 each, cheap
    tasks, failed calls and calls stopped by a task budget breaker; each call or task is its own trace."""
    with attribute(tenant="acme", feature="chat", team="core"):
        for _ in range(N_CHEAP):
            _ask(client, "gpt-4o-mini", 1_000, 100)
        _ask(client, "gpt-4o", 20_000, 0)  # $0.05: the boundary is kept
        for _ in range(3):
            _ask(client, "gpt-4o", 30_000, 1_000)
        for _ in range(2):
            with task("research"):
                for _ in range(7):
                    _ask(client, "gpt-4o", 14_000, 500)  # $0.04 a call, $0.28 a task
        for _ in range(5):
            with task("triage"):
                for _ in range(3):
                    _ask(client, "gpt-4o-mini", 2_000, 200)
        for _ in range(4):
            with pytest.raises(openai.InternalServerError):
                _ask(client, "gpt-4o-mini", 1_000, 100, status=500)
        for _ in range(3):
            with pytest.raises(BudgetExceeded):
                with task("capped", budget_usd=0.001):
                    _ask(client, "gpt-4o", 1_000, 100)


def edge_workload(client) -> None:
    """A partner's agent claiming to be acme, with costly calls (forged cost and owner) and failed calls."""
    with attribute(tenant="acme", feature="export", team="partners"):
        for _ in range(N_FORGED):
            _ask(client, "gpt-4o", 30_000, 1_000)
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                _ask(client, "gpt-4o-mini", 1_000, 100, status=500)


def _run(server, service: str, workload, **resource):
    with InMemoryPipeline(instrument=[OpenAIInstrumentor()], resource_attributes={SERVICE_NAME: service, **resource}) as p:
        with openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=0) as client:
            workload(client)
        return p.spans(), p.metrics()


def _hex(trace_id: int) -> str:
    return format(trace_id, "032x")


@dataclass
class Sent:
    """What a workload sent, from its own exported spans (the truth the Collector's output is checked against)."""

    spans: list
    traces: dict[str, list] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self):
        for span in self.spans:
            self.traces[_hex(span.context.trace_id)].append(span)

    def where(self, predicate) -> set[str]:
        return {t for t, spans in self.traces.items() if any(predicate(s) for s in spans)}

    @property
    def llm(self) -> list:
        return [s for s in self.spans if A.GEN_AI_REQUEST_MODEL in s.attributes]

    def usd(self) -> float:
        return sum(s.attributes.get(A.TOKENTRAIL_COST_NANO_USD, 0) for s in self.llm) / NANO

    def priced_calls(self) -> int:
        return sum(1 for s in self.llm if s.attributes.get(A.TOKENTRAIL_COST_STATUS) == "priced")

    def tokens(self, key: str) -> int:
        return sum(s.attributes.get(key, 0) for s in self.llm)


def other_sender_metrics():
    """Another instrumentation's histogram, with the environment only on its resource."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create(
        {SERVICE_NAME: OTHER, A.DEPLOYMENT_ENVIRONMENT_NAME: "staging"}))
    provider.get_meter("another-instrumentation").create_histogram(
        M.GEN_AI_CLIENT_TOKEN_USAGE, unit="{token}").record(120, {A.GEN_AI_REQUEST_MODEL: "gpt-4o"})
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def _export_spans(exporter, spans) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()


def _export_metrics(exporter, metrics) -> None:
    from opentelemetry.sdk.metrics.export import MetricExportResult

    assert exporter.export(metrics) == MetricExportResult.SUCCESS
    exporter.shutdown()


def _wait(predicate, message: str, collector, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message}\n{collector.collector.log_tail()}")
        time.sleep(0.2)


def _cost_count(samples, job: str) -> float:
    return sum(s.value for s in samples if s.name == f"{q.COST}_count" and s.labels.get("job") == job)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Both workloads through one Collector; returns (trusted Sent, edge Sent, kept spans by trace, samples)."""
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

    workdir = tmp_path_factory.mktemp("collector")
    with pytest.MonkeyPatch.context() as mp, fake_provider() as server, \
            running_collector(workdir, feature_gates=(RECORD_POLICY,)) as collector:
        mp.delenv("TOKENTRAIL_BUDGETS", raising=False)
        budgets.reload()
        trusted_spans, trusted_metrics = _run(server, TRUSTED, trusted_workload)
        edge_spans, edge_metrics = _run(server, EDGE, edge_workload, **{A.TOKENTRAIL_TENANT: "acme"})
        # every door and protocol: trusted spans over gRPC and metrics over HTTP, the edge the other way round
        _export_spans(GrpcSpans(endpoint=f"127.0.0.1:{collector.ports['OTLP_GRPC']}", insecure=True), trusted_spans)
        _export_metrics(HttpMetrics(endpoint=collector.url("OTLP_HTTP") + "/v1/metrics"), trusted_metrics)
        _export_metrics(HttpMetrics(endpoint=collector.url("OTLP_HTTP") + "/v1/metrics"), other_sender_metrics())
        _export_spans(HttpSpans(endpoint=collector.url("EDGE_HTTP") + "/v1/traces"), edge_spans)
        _export_metrics(GrpcMetrics(endpoint=f"127.0.0.1:{collector.ports['EDGE_GRPC']}", insecure=True),
                        edge_metrics)
        # The sampler decides traces in order of arrival, one batch a second: an error trace sent a second after
        # everything else comes out after every earlier decision.
        time.sleep(1.1)
        with InMemoryPipeline(instrument=False, resource_attributes={SERVICE_NAME: TRUSTED}) as p:
            with p.tracer().start_as_current_span("last") as last:
                last.set_status(StatusCode.ERROR)
            sentinel = _hex(last.get_span_context().trace_id)
            _export_spans(GrpcSpans(endpoint=f"127.0.0.1:{collector.ports['OTLP_GRPC']}", insecure=True), p.spans())
        _wait(lambda: any(s.trace_id == sentinel for s in read_spans(collector.traces_file)),
              "the Collector never wrote the last trace", collector)
        kept = defaultdict(list)
        for span in read_spans(collector.traces_file):
            if span.trace_id != sentinel:
                kept[span.trace_id].append(span)
        trusted, edge = Sent(trusted_spans), Sent(edge_spans)
        _wait(lambda: (samples := scrape(collector.metrics_url))
              and _cost_count(samples, TRUSTED) == trusted.priced_calls()
              and _cost_count(samples, EDGE) == edge.priced_calls()
              and any(s.labels.get("job") == OTHER for s in samples),
              "the Collector's prometheus exporter never showed every call", collector)
        samples = scrape(collector.metrics_url)
        budgets.reload()
        yield trusted, edge, dict(kept), samples


# --- tail sampling ----------------------------------------------------------------------------------------
PROMISED = {  # what the README promises to keep, read off the spans the app exported
    "expensive call": lambda s: s.attributes.get(A.TOKENTRAIL_COST_NANO_USD, 0) >= CALL_KEEP_NANO,
    "expensive task": lambda s: s.attributes.get(A.TOKENTRAIL_TASK_COST_NANO_USD, 0) >= TASK_KEEP_NANO,
    "error": lambda s: s.status.status_code == StatusCode.ERROR,
    "budget breaker": lambda s: A.TOKENTRAIL_BUDGET_EXCEEDED in s.attributes,
}


def _cheap(sent: Sent) -> set[str]:
    return set(sent.traces) - sent.where(lambda s: any(promised(s) for promised in PROMISED.values()))


def test_the_workload_has_every_kind_of_trace(run):
    trusted, _, _, _ = run
    calls = trusted.where(PROMISED["expensive call"])
    assert len(calls) == 4
    assert min(s.attributes[A.TOKENTRAIL_COST_NANO_USD] for t in calls for s in trusted.traces[t]
               if A.TOKENTRAIL_COST_NANO_USD in s.attributes) == CALL_KEEP_NANO  # exactly $0.05
    tasks = trusted.where(PROMISED["expensive task"])
    assert len(tasks) == 2 and not tasks & calls  # kept for the task total, no call in them reaches $0.05
    assert len(trusted.where(PROMISED["budget breaker"])) == 3
    assert len(trusted.where(PROMISED["error"])) == 4 + 3
    assert len(_cheap(trusted)) == N_CHEAP + 5


@pytest.mark.parametrize("kind", sorted(PROMISED))
def test_every_trace_the_policies_promise_is_kept_whole(run, kind):
    trusted, _, kept, _ = run
    traces = trusted.where(PROMISED[kind])
    assert traces and traces <= kept.keys()
    for t in traces:
        assert {s.span_id for s in kept[t]} == {format(s.context.span_id, "016x") for s in trusted.traces[t]}
        # kept by a policy, not by the 10% share
        assert {s.scope.get(POLICY) for s in kept[t]} != {"baseline-share"}, t


def test_the_cheap_rest_is_sampled_near_ten_percent(run):
    trusted, _, kept, _ = run
    cheap = _cheap(trusted)
    share = len(cheap & kept.keys())
    # binomial(305, 0.1): mean 30.5, sd 5.2; 4.5 sd either side is rarer than one run in 10^5
    mean, sd = len(cheap) * BASELINE, math.sqrt(len(cheap) * BASELINE * (1 - BASELINE))
    assert mean - 4.5 * sd <= share <= mean + 4.5 * sd, share
    assert {s.scope.get(POLICY) for t in cheap & kept.keys() for s in kept[t]} == {"baseline-share"}


def test_metrics_stay_exact_whatever_is_sampled(run):
    trusted, _, kept, samples = run
    assert len(set(trusted.traces) - kept.keys()) > N_CHEAP // 2  # most traces were dropped...
    mine = [s for s in samples if s.labels.get("job") == TRUSTED]
    # ...and the cost of every call is still there, to the micro-dollar
    assert sum(s.value for s in mine if s.name == f"{q.COST}_sum") == pytest.approx(trusted.usd(), abs=1e-6)
    assert sum(s.value for s in mine if s.name == f"{q.COST}_count") == trusted.priced_calls()
    output = sum(s.value for s in mine if s.name == q.TOKENS and s.labels.get(q.TOKEN_TYPE) == "output")
    assert output == trusted.tokens(A.GEN_AI_USAGE_OUTPUT_TOKENS)


# --- the two doors ----------------------------------------------------------------------------------------
def _tokentrail_keys(span) -> set[str]:
    keys = set(span.attributes) | set(span.resource) | {k for e in span.events for k in e}
    return {k for k in keys if k.startswith("tokentrail.")}


def test_the_trusted_door_keeps_attribution_and_cost(run):
    trusted, _, kept, _ = run
    sent = {format(s.context.span_id, "016x"): s for s in trusted.llm}
    checked = 0
    for spans in kept.values():
        for span in spans:
            if span.span_id in sent and span.resource.get(SERVICE_NAME) == TRUSTED:
                original = sent[span.span_id].attributes
                assert span.attributes[A.TOKENTRAIL_TENANT] == "acme"
                assert span.attributes.get(A.TOKENTRAIL_COST_NANO_USD) == original.get(A.TOKENTRAIL_COST_NANO_USD)
                checked += 1
    assert checked >= 30


def test_the_untrusted_door_strips_forged_attribution_from_spans(run):
    _, edge, kept, _ = run
    assert all(s.attributes[A.TOKENTRAIL_TENANT] == "acme" for s in edge.llm)  # what the partner claimed
    out = [s for t in edge.traces if t in kept for s in kept[t]]
    errors = edge.where(PROMISED["error"])
    assert len(errors) == 3 and errors <= kept.keys()  # failed calls are kept, from either door
    assert out and all(_tokentrail_keys(s) == set() for s in out), [_tokentrail_keys(s) for s in out]
    assert all(s.attributes[A.GEN_AI_REQUEST_MODEL] for s in out if s.name.startswith("chat"))
    # a forged cost cannot buy a trace into the trace store: only the 10% share keeps the costly ones
    forged = set(edge.traces) - errors
    assert len(forged & kept.keys()) < N_FORGED / 2
    assert {s.scope.get(POLICY) for t in forged & kept.keys() for s in kept[t]} <= {"baseline-share"}


def test_the_untrusted_door_counts_the_spend_as_unattributed(run):
    _, edge, _, samples = run
    theirs = [s for s in samples if s.labels.get("job") == EDGE and s.name.startswith("tokentrail_")]
    assert theirs
    assert all(q.TENANT not in s.labels and q.FEATURE not in s.labels and q.TEAM not in s.labels for s in theirs)
    costs = [s for s in theirs if s.name == f"{q.COST}_sum"]
    assert {s.labels[q.ATTRIBUTED] for s in costs} == {"false"}
    assert {s.labels[label(A.TOKENTRAIL_COST_STATUS)] for s in costs} == {"priced"}
    assert sum(s.value for s in costs) == pytest.approx(edge.usd(), abs=1e-6)
    # the spend is still measured right: every token type keeps its count
    for token_type, key in (("input", A.GEN_AI_USAGE_INPUT_TOKENS), ("output", A.GEN_AI_USAGE_OUTPUT_TOKENS)):
        got = sum(s.value for s in theirs if s.name == q.TOKENS and s.labels.get(q.TOKEN_TYPE) == token_type)
        assert got == edge.tokens(key) > 0, token_type
    trusted_costs = [s for s in samples if s.labels.get("job") == TRUSTED and s.name == f"{q.COST}_sum"]
    assert {s.labels.get(q.TENANT) for s in trusted_costs} == {"acme"}



def test_the_metrics_pipeline_puts_the_environment_on_other_senders_points(run):
    _, _, _, samples = run
    [point] = [s for s in samples if s.labels.get("job") == OTHER and s.name == f"{prom(M.GEN_AI_CLIENT_TOKEN_USAGE)}_sum"]
    assert point.labels[q.ENVIRONMENT] == "staging" and point.value == 120


# --- names ------------------------------------------------------------------------------------------------
def test_the_exporter_names_metrics_as_the_dashboards_query_them(run):
    """Every tokentrail and gen_ai family the real prometheus exporter shows is the name promnames gives it
    (units, _total, histogram suffixes), the one the dashboards and alert rules query."""
    _, _, _, samples = run
    predicted = set()
    for metric in generate.load_registry()["metrics"]:
        name = prom(metric["id"])
        predicted |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if metric["instrument"] == "histogram" \
            else {name}
    shown = {s.name for s in samples if s.name.startswith(("tokentrail_", "gen_ai_"))}
    assert shown <= predicted, shown - predicted
    assert {f"{q.COST}_bucket", q.TOKENS, f"{q.TASK_COST}_sum", f"{q.TASK_ITERATIONS}_count",
            f"{q.DURATION}_bucket"} <= shown
