"""CostSpanProcessor and AttributionSpanProcessor through the public pipeline.

Foreign spans are made two ways: by the official OpenTelemetry OpenAI instrumentation driving
the real openai SDK against the fake provider, and by a plain tracer setting the attributes
OpenLLMetry-style instrumentations set (older ``gen_ai.system``, no cost).
"""

from __future__ import annotations

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor as OfficialOpenAIInstrumentor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

import tokentrail
from tokentrail.processor.attribution import AttributionSpanProcessor, ensure_installed, owner_stamp
from tokentrail.processor import pricing, sdk
from tokentrail.processor.cost import CostSpanProcessor, pipeline_active
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as m
from tokentrail.testing import FakeProviderServer, FakeResponse, InMemoryPipeline


def _chat_response(request):
    body = request.json
    return FakeResponse(json={
        "id": "chatcmpl-foreign-1", "object": "chat.completion", "created": 1, "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10000, "completion_tokens": 1200, "total_tokens": 11200,
                  "prompt_tokens_details": {"cached_tokens": 2000}},
    })


@pytest.fixture
def server():  # its own: every chat completion answered by _chat_response, no fake script
    with FakeProviderServer() as srv:
        srv.route("POST", r"/v1/chat/completions", _chat_response)
        yield srv


@pytest.fixture
def official_instrumentor():
    return OfficialOpenAIInstrumentor()


def test_official_openai_span_is_priced_and_owned(server, official_instrumentor):
    """The official instrumentation's span leaves without cost; the exported copy has it."""
    with InMemoryPipeline(instrument=[official_instrumentor]) as pipeline:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="test")
        with tokentrail.attribute(tenant="acme", feature="summarize", team="support"):
            client.chat.completions.create(model="gpt-5.4-mini", messages=[{"role": "user", "content": "hi"}])
        [span] = pipeline.llm_spans()
        a = span.attributes
        assert span.instrumentation_scope.name.startswith("opentelemetry.instrumentation")
        # Worked case: 8000 uncached x $0.75/M + 2000 cached x $0.075/M + 1200 x $4.50/M.
        assert a[attr.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(0.01155)
        assert a[attr.TOKENTRAIL_COST_NANO_USD] == 11_550_000
        assert a[attr.GEN_AI_USAGE_COST_CURRENCY] == "USD"
        assert a[attr.GEN_AI_USAGE_COST_SOURCE] == "local"
        assert a[attr.TOKENTRAIL_COST_STATUS] == "priced"
        assert a[attr.TOKENTRAIL_TENANT] == "acme"
        assert a[attr.TOKENTRAIL_FEATURE] == "summarize"
        assert a[attr.TOKENTRAIL_TEAM] == "support"
        assert a[attr.TOKENTRAIL_ATTRIBUTED] is True
        assert pipeline.metric_sum(m.TOKENTRAIL_COST, tenant="acme", feature="summarize") == pytest.approx(0.01155)
        assert pipeline.metric_count(m.TOKENTRAIL_COST) == 1
        assert pipeline.metric_sum(m.TOKENTRAIL_TOKENS, tenant="acme", token_type="input") == 8000
        assert pipeline.metric_sum(m.TOKENTRAIL_TOKENS, tenant="acme", token_type="cache_read") == 2000
        assert pipeline.metric_sum(m.TOKENTRAIL_TOKENS, tenant="acme", token_type="output") == 1200


def test_enriched_copy_preserves_everything():
    with InMemoryPipeline(instrument=False, resource_attributes={"service.name": "svc"}) as pipeline:
        tracer = pipeline.tracer_provider.get_tracer("openllmetry.like", "9.9")
        with tracer.start_as_current_span("parent") as parent:
            other = parent.get_span_context()
            with tracer.start_as_current_span(
                "chat claude-sonnet-4", kind=SpanKind.CLIENT, links=[Link(other, {"why": "retry"})],
                attributes={attr.GEN_AI_SYSTEM: "anthropic", attr.GEN_AI_OPERATION_NAME: "chat",
                            attr.GEN_AI_REQUEST_MODEL: "claude-sonnet-4", "app.custom": "kept"},
            ) as span:
                span.add_event("gen_ai.choice", {"index": 0})
                span.set_attribute(attr.GEN_AI_USAGE_INPUT_TOKENS, 8000)
                span.set_attribute(attr.GEN_AI_USAGE_OUTPUT_TOKENS, 1200)
                span.set_status(Status(StatusCode.ERROR, "boom"))
                original_ctx = span.get_span_context()
        spans = {s.name: s for s in pipeline.spans()}
        out = spans["chat claude-sonnet-4"]
        assert out.context == original_ctx
        assert out.parent.span_id == other.span_id
        assert out.kind is SpanKind.CLIENT
        assert out.status.status_code is StatusCode.ERROR and out.status.description == "boom"
        assert [e.name for e in out.events] == ["gen_ai.choice"]
        assert out.links[0].context == other and out.links[0].attributes["why"] == "retry"
        assert out.instrumentation_scope.name == "openllmetry.like"
        assert out.instrumentation_scope.version == "9.9"
        assert out.resource.attributes["service.name"] == "svc"
        assert out.start_time < out.end_time
        assert out.attributes["app.custom"] == "kept"
        assert out.dropped_attributes == 0 and out.dropped_events == 0 and out.dropped_links == 0
        # claude-sonnet-4: 8000 x $3/M + 1200 x $15/M = $0.042
        assert out.attributes[attr.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(0.042)
        assert out.attributes[attr.TOKENTRAIL_ATTRIBUTED] is False
        # Unattributed spend is counted, not dropped.
        assert pipeline.metric_sum(m.TOKENTRAIL_COST, attributed=False) == pytest.approx(0.042)


def test_dropped_counts_survive_the_copy():
    from opentelemetry.sdk.trace import SpanLimits

    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_attributes=12, max_events=1))
    provider.add_span_processor(CostSpanProcessor(SimpleSpanProcessor(exporter)))
    tracer = provider.get_tracer("foreign")
    # The SDK evicts the oldest attributes when full: the filler goes first.
    with tracer.start_as_current_span("chat", attributes={
        **{f"x.{i}": i for i in range(10)},
        attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_OPERATION_NAME: "chat",
        attr.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        attr.GEN_AI_USAGE_INPUT_TOKENS: 1000, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 100,
    }) as span:
        span.add_event("a")
        span.add_event("b")
    [out] = exporter.get_finished_spans()
    assert out.dropped_attributes == 3
    assert out.dropped_events == 1
    # The copy is not bound by the span limits: the cost is added even on a full span.
    assert out.attributes[attr.TOKENTRAIL_COST_STATUS] == "priced"
    provider.shutdown()


def test_own_priced_span_passes_through_unchanged_and_is_metered_once():
    """A span priced before end (our instrumentations) is not re-priced or copied."""
    exporter = InMemorySpanExporter()
    with InMemoryPipeline(instrument=False) as pipeline:
        seen = []
        pipeline.tracer_provider.add_span_processor(_Recorder(seen))
        tracer = pipeline.tracer_provider.get_tracer("tokentrail.instrumentation.openai")
        with tokentrail.attribute(tenant="globex"):
            start = {attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_OPERATION_NAME: "chat",
                     attr.GEN_AI_REQUEST_MODEL: "gpt-4o-mini"}
            with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
                **start, **owner_stamp(start),  # as our instrumentations start their spans
                attr.GEN_AI_USAGE_INPUT_TOKENS: 100, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 10,
                attr.TOKENTRAIL_COST_STATUS: "priced", attr.TOKENTRAIL_COST_NANO_USD: 123_456_789,
                attr.GEN_AI_USAGE_COST_AMOUNT: 0.123456789,
            }):
                pass
        [out] = pipeline.llm_spans()
        assert out is seen[0]  # the very span object the SDK ended: no copy
        assert out.attributes[attr.TOKENTRAIL_TENANT] == "globex"
        assert out.attributes[attr.TOKENTRAIL_ATTRIBUTED] is True
        [point] = pipeline.metric_points(m.TOKENTRAIL_COST)
        assert point.count == 1
        assert point.sum == 0.123456789  # nano-USD converted once, exactly
        assert point.attributes[attr.TOKENTRAIL_TENANT] == "globex"
        assert point.attributes[attr.TOKENTRAIL_ATTRIBUTED] is True
        # Our own spans also feed the upstream GenAI histograms.
        assert pipeline.metric_count(m.GEN_AI_CLIENT_OPERATION_DURATION) == 1
        assert pipeline.metric_sum(m.GEN_AI_CLIENT_TOKEN_USAGE, attributes={attr.GEN_AI_TOKEN_TYPE: "input"}) == 100
    del exporter


def test_exemplar_links_the_trace():
    with InMemoryPipeline(instrument=False) as pipeline:
        tracer = pipeline.tracer("foreign")
        with tracer.start_as_current_span("chat", attributes={
            attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_OPERATION_NAME: "chat",
            attr.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            attr.GEN_AI_USAGE_INPUT_TOKENS: 1000, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 100,
        }) as span:
            ctx = span.get_span_context()
        [point] = pipeline.metric_points(m.TOKENTRAIL_COST)
        assert point.exemplars, "cost point has an exemplar"
        assert point.exemplars[0].trace_id == ctx.trace_id
        assert point.exemplars[0].span_id == ctx.span_id


def test_token_points_carry_no_exemplar_even_inside_a_request_span():
    # Exemplars only where one drills down from (cost, duration): the token points must not
    # pick up the enclosing request span the SDK would fall back to.
    with InMemoryPipeline(instrument=False) as pipeline:
        tracer = pipeline.tracer("foreign")
        with tracer.start_as_current_span("GET /summarise"):
            with tracer.start_as_current_span("chat", attributes={
                attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_OPERATION_NAME: "chat",
                attr.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
                attr.GEN_AI_USAGE_INPUT_TOKENS: 1000, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 100,
            }) as span:
                ctx = span.get_span_context()
        # One collection: the SDK hands exemplars out once per collection.
        points = {metric.name: list(metric.data.data_points)
                  for rm in pipeline.metrics().resource_metrics for sm in rm.scope_metrics for metric in sm.metrics}
        [cost] = points[m.TOKENTRAIL_COST]
        assert [e.span_id for e in cost.exemplars] == [ctx.span_id]
        tokens = points[m.TOKENTRAIL_TOKENS]
        assert sorted(p.value for p in tokens) == [100, 1000]
        assert all(not p.exemplars for p in tokens)


def test_unknown_model_is_unpriced_never_zero():
    with InMemoryPipeline(instrument=False) as pipeline:
        tracer = pipeline.tracer("foreign")
        with tracer.start_as_current_span("chat", attributes={
            attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_OPERATION_NAME: "chat",
            attr.GEN_AI_REQUEST_MODEL: "our-private-model-xyz",
            attr.GEN_AI_USAGE_INPUT_TOKENS: 1000, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 100,
        }):
            pass
        [span] = pipeline.llm_spans()
        assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "unpriced"
        assert attr.GEN_AI_USAGE_COST_AMOUNT not in span.attributes
        assert pipeline.metric_points(m.TOKENTRAIL_COST) == []
        assert pipeline.metric_sum(m.TOKENTRAIL_CALLS_UNPRICED, model="our-private-model-xyz") == 1
        # Tokens are still counted.
        assert pipeline.metric_sum(m.TOKENTRAIL_TOKENS, token_type="output") == 100


def test_malformed_foreign_usage_is_no_usage_not_a_crash():
    with InMemoryPipeline(instrument=False) as pipeline:
        tracer = pipeline.tracer("foreign")
        with tracer.start_as_current_span("chat", attributes={
            attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_OPERATION_NAME: "chat",
            attr.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            attr.GEN_AI_USAGE_INPUT_TOKENS: 10, attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 50,
            attr.GEN_AI_USAGE_OUTPUT_TOKENS: "lots",
        }):
            pass
        [span] = pipeline.llm_spans()
        assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"
        assert pipeline.metric_points(m.TOKENTRAIL_COST) == []


def test_every_span_inside_attribution_is_owned(monkeypatch):
    """HTTP/DB/tool spans are owned too; static TOKENTRAIL_ATTRIBUTES fill in, context wins."""
    monkeypatch.setenv("TOKENTRAIL_ATTRIBUTES", "team=support,tenant=default-tenant")
    with InMemoryPipeline(instrument=False) as pipeline:
        tracer = pipeline.tracer("some.http.instrumentation")
        with tokentrail.attribute(tenant="acme"):
            with tracer.start_as_current_span("GET /search"):
                pass
        with tracer.start_as_current_span("SELECT orders"):
            pass
        spans = {s.name: s.attributes for s in pipeline.spans()}
        assert spans["GET /search"][attr.TOKENTRAIL_TENANT] == "acme"
        assert spans["GET /search"][attr.TOKENTRAIL_TEAM] == "support"
        assert spans["SELECT orders"][attr.TOKENTRAIL_TENANT] == "default-tenant"
        # Non-LLM spans get no cost and no attributed flag, and no metric points.
        assert attr.TOKENTRAIL_COST_STATUS not in spans["GET /search"]
        assert attr.TOKENTRAIL_ATTRIBUTED not in spans["GET /search"]
        assert pipeline.metric_points(m.TOKENTRAIL_TOKENS) == []


def test_pipeline_active_asks_the_provider():
    with InMemoryPipeline(instrument=False) as pipeline:
        assert pipeline_active(pipeline.tracer_provider)
        assert not pipeline_active(TracerProvider())
        assert not pipeline_active(trace.NoOpTracerProvider())  # processors unknown: not assumed


def test_pipeline_active_without_a_provider_asks_the_global_one():
    # A fresh process: no global provider is set until the end.
    code = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from tokentrail import state
from tokentrail.processor import sdk
from tokentrail.processor.cost import CostSpanProcessor, pipeline_active
seen = [pipeline_active()]
running = CostSpanProcessor()
seen.append(pipeline_active())  # the API's proxy provider: any one running in the process
running.shutdown()
seen.append(pipeline_active())
running = CostSpanProcessor()
state.reset()
seen.append(pipeline_active())
provider = TracerProvider()
trace.set_tracer_provider(provider)
seen.append(pipeline_active())  # an SDK provider: exactly whether it has one
provider.add_span_processor(running)
seen.append(pipeline_active())
print(seen)
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[False, True, False, False, False, True]", out.stderr


def test_ensure_installed_adds_attribution_once(monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_ATTRIBUTES", "team=platform")
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert ensure_installed(provider)
    assert ensure_installed(provider)
    assert sum(isinstance(p, AttributionSpanProcessor) for p in sdk.span_processors(provider)) == 1
    with provider.get_tracer("t").start_as_current_span("work"):
        pass
    [span] = exporter.get_finished_spans()
    assert span.attributes[attr.TOKENTRAIL_TEAM] == "platform"
    # The API's proxy provider cannot take processors: reported, not raised.
    assert ensure_installed(trace.NoOpTracerProvider()) is False
    provider.shutdown()


class _Recorder(CostSpanProcessor.__mro__[1]):  # a plain SpanProcessor
    def __init__(self, seen):
        self.seen = seen

    def on_end(self, span):
        self.seen.append(span)


def test_two_exporters_count_each_call_once():
    """The configurator wraps each exporter; only the first wrapper records metrics."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from tokentrail.distro import _export_processor_factory
    from tokentrail.processor.metrics import metric_views

    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], views=metric_views())
    factory = _export_processor_factory()
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    provider = TracerProvider()
    for exporter in (first, second):
        processor = factory(exporter)
        processor._meter_provider = meter_provider
        provider.add_span_processor(processor)
    provider.force_flush()
    with provider.get_tracer("foreign").start_as_current_span("chat", attributes={
        attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_OPERATION_NAME: "chat",
        attr.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        attr.GEN_AI_USAGE_INPUT_TOKENS: 1000, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 100,
    }):
        pass
    provider.force_flush()
    for exporter in (first, second):
        [span] = exporter.get_finished_spans()
        assert span.attributes[attr.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(0.00021)
    counts = [pt.count for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
              for mt in sm.metrics if mt.name == m.TOKENTRAIL_COST for pt in mt.data.data_points]
    assert counts == [1]
    provider.shutdown()
    meter_provider.shutdown()


def test_our_openai_calls_in_the_pipeline_are_metered_once():
    """Our instrumentation prices before end; the processor meters; no fallback double count."""
    from tokentrail.testing import fake_provider
    from tokentrail.testing import openai_api

    with fake_provider() as srv, InMemoryPipeline() as pipeline:
        srv.enqueue(openai_api.reply(prompt_tokens=10000, cached_tokens=2000, completion_tokens=1200))
        client = openai.OpenAI(base_url=openai_api.base_url(srv), api_key="test", max_retries=0)
        with tokentrail.attribute(tenant="acme", team="support"):
            client.chat.completions.create(model="gpt-5.4-mini", messages=[{"role": "user", "content": "hi"}])
        [span] = pipeline.llm_spans()
        assert span.instrumentation_scope.name.startswith("tokentrail")
        assert span.attributes[attr.TOKENTRAIL_COST_NANO_USD] == 11_550_000
        assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"
        assert pipeline.metric_count(m.TOKENTRAIL_COST, tenant="acme", team="support") == 1
        assert pipeline.metric_sum(m.TOKENTRAIL_COST, tenant="acme") == pytest.approx(0.01155)
        assert pipeline.metric_count(m.GEN_AI_CLIENT_OPERATION_DURATION) == 1
    # On exit the SDK is uninstrumented again.
    with fake_provider() as srv, InMemoryPipeline(instrument=False) as quiet:
        client = openai.OpenAI(base_url=openai_api.base_url(srv), api_key="test", max_retries=0)
        client.chat.completions.create(model="gpt-5.4-mini", messages=[{"role": "user", "content": "hi"}])
        assert quiet.spans() == []


def test_distro_sets_exporter_defaults_only_when_unset(monkeypatch):
    from tokentrail.distro import TokentrailDistro

    for name in ("OTEL_TRACES_EXPORTER", "OTEL_LOGS_EXPORTER"):  # restored after the test
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    TokentrailDistro().configure()
    import os

    assert os.environ["OTEL_TRACES_EXPORTER"] == "otlp"
    assert os.environ["OTEL_METRICS_EXPORTER"] == "prometheus"


def test_our_instrumentations_spans_are_stamped_once_by_themselves():
    """AttributionSpanProcessor skips them: they start with ``owner_stamp`` in their attributes."""
    with InMemoryPipeline(instrument=False) as pipeline:
        ours = pipeline.tracer_provider.get_tracer("tokentrail.instrumentation.openai")
        foreign = pipeline.tracer("opentelemetry.instrumentation.openai_v2")
        chat = {attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_OPERATION_NAME: "chat",
                attr.GEN_AI_REQUEST_MODEL: "gpt-4o-mini"}
        with tokentrail.attribute(tenant="acme"):
            with ours.start_as_current_span("ours, stamped by itself", attributes={**chat, **owner_stamp(chat)}):
                pass
            with ours.start_as_current_span("ours, not stamped", attributes=chat):
                pass
            with foreign.start_as_current_span("theirs", attributes=chat):
                pass
        spans = {s.name: s.attributes for s in pipeline.spans()}
        assert spans["ours, stamped by itself"][attr.TOKENTRAIL_TENANT] == "acme"
        assert spans["ours, stamped by itself"][attr.TOKENTRAIL_ATTRIBUTED] is True
        assert attr.TOKENTRAIL_TENANT not in spans["ours, not stamped"]
        assert spans["theirs"][attr.TOKENTRAIL_TENANT] == "acme"
        assert spans["theirs"][attr.TOKENTRAIL_ATTRIBUTED] is True


def test_owner_stamp_marks_only_genai_calls_attributed():
    with tokentrail.attribute(tenant="acme", feature="search"):
        call = owner_stamp({attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_OPERATION_NAME: "chat"})
        agent = owner_stamp({attr.GEN_AI_OPERATION_NAME: "invoke_agent"})
        http = owner_stamp({"http.request.method": "GET"})
    assert call[attr.TOKENTRAIL_TENANT] == "acme" and call[attr.TOKENTRAIL_ATTRIBUTED] is True
    assert agent[attr.TOKENTRAIL_FEATURE] == "search" and attr.TOKENTRAIL_ATTRIBUTED not in agent
    assert attr.TOKENTRAIL_ATTRIBUTED not in http
    assert owner_stamp({attr.GEN_AI_OPERATION_NAME: "chat"})[attr.TOKENTRAIL_ATTRIBUTED] is False


# --- the SDK internals tokentrail.processor.sdk reads, pinned ---------------------------------
def test_sdk_processors_of_a_tracer_provider_are_found_in_order():
    provider = TracerProvider()
    first, second = AttributionSpanProcessor(), CostSpanProcessor()
    provider.add_span_processor(first)
    provider.add_span_processor(second)
    assert sdk.span_processors(provider) == (first, second)
    assert sdk.span_processors(trace.NoOpTracerProvider()) is None
    assert sdk.span_processors(trace.ProxyTracerProvider()) is None
    provider.shutdown()


def test_sdk_scope_name_of_live_and_ended_spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("some.instrumentation", "1.0").start_as_current_span("work") as live:
        assert sdk.scope_name(live) == "some.instrumentation"
    [ended] = exporter.get_finished_spans()
    assert sdk.scope_name(ended) == "some.instrumentation"
    # the fields read first (the public properties are the fallback)
    assert live._instrumentation_scope._name == ended._instrumentation_scope._name == "some.instrumentation"
    assert sdk.scope_name(trace.INVALID_SPAN) == ""
    provider.shutdown()


def test_sdk_on_ending_reaches_the_wrapped_processor():
    ending = []

    class Ending(SimpleSpanProcessor):
        def _on_ending(self, span):
            ending.append(span.name)

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(CostSpanProcessor(Ending(exporter)))
    with provider.get_tracer("t").start_as_current_span("work"):
        pass
    assert ending == ["work"]
    assert [s.name for s in exporter.get_finished_spans()] == ["work"]
    provider.shutdown()


@pytest.mark.parametrize("ours, theirs", [
    ("openai.gpt-oss-120b-1:0", "gpt-oss-120b-1:0"),  # was kept: the openai. vendor prefix was not known
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929-v1:0"),
    ("us.anthropic.claude-sonnet-4-20250514-v1:0", "anthropic.claude-sonnet-4-20250514-v1:0"),
])
def test_a_foreign_wrapper_of_our_bedrock_call_is_dropped_however_it_spells_the_model(ours, theirs):
    """A wrapper that does not make its span current (so ours cannot start under it) and
    records the Bedrock id without the prefixes: one call, one span, one cost."""
    from tokentrail.instrumentation.base import Instruments
    from tokentrail.instrumentation.genai_span import start_llm_call
    from tokentrail.processor.usage import Usage

    usage = {attr.GEN_AI_USAGE_INPUT_TOKENS: 1000, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 100}
    with InMemoryPipeline(instrument=False) as pipeline:
        wrapper = pipeline.tracer("opentelemetry.instrumentation.bedrock").start_span("chat", attributes={
            attr.GEN_AI_SYSTEM: "aws.bedrock", attr.GEN_AI_REQUEST_MODEL: theirs, **usage})
        provider = pipeline.tracer_provider
        # our call's lifecycle, as the Bedrock instrumentation runs it
        call = start_llm_call(Instruments(provider.get_tracer("tokentrail.instrumentation.bedrock"),
                                          tracer_provider=provider), provider="aws.bedrock", operation="chat",
                              request_model=ours, check_budget=False)
        call.set_usage(Usage(input_tokens=1000, output_tokens=100))
        call.end()
        wrapper.end()
        assert [s.name for s in pipeline.llm_spans()] == [f"chat {ours}"]
        assert pipeline.metric_count(m.TOKENTRAIL_COST) == 1


# --- sdk.set_span_attributes: the SDK's set_attributes without its per-value cleaning ---------
_KEYS = st.sampled_from(["gen_ai.usage.input_tokens", "tokentrail.cost.nano_usd", "gen_ai.response.id", "a", ""])
_VALUES = st.one_of(
    st.text(max_size=12), st.integers(), st.booleans(), st.floats(allow_nan=False), st.none(),
    st.tuples(st.text(max_size=4)), st.lists(st.text(max_size=4), max_size=2),
    st.sampled_from([StatusCode.OK, b"raw", 2**70]),  # an Enum, bytes, a big int
)
_ATTRIBUTES = st.dictionaries(st.one_of(_KEYS, st.integers(0, 2)), _VALUES, max_size=6)


def _span_pair(limits, initial):
    from opentelemetry.sdk.trace import SpanLimits

    provider = TracerProvider(span_limits=SpanLimits(**limits))
    tracer = provider.get_tracer("t")
    return [tracer.start_span("chat", attributes=initial) for _ in range(2)]


def _state(span):
    return list(span._attributes._dict.items()), span._attributes.dropped


@settings(max_examples=300, deadline=None)
@given(initial=st.dictionaries(_KEYS.filter(bool), st.text(max_size=8), max_size=3),
       updates=st.lists(_ATTRIBUTES, min_size=1, max_size=3),
       max_attributes=st.sampled_from([None, 2, 4, 128]), max_length=st.sampled_from([None, 3]),
       end_before=st.booleans())
def test_set_span_attributes_leaves_a_span_as_the_sdk_would(initial, updates, max_attributes, max_length,
                                                              end_before):
    """Same attributes, same order (a key set again moves to the end), same dropped count, as
    the SDK's own set_attributes, under any span limits, and nothing on an ended span."""
    limits = {"max_span_attributes": max_attributes, "max_span_attribute_length": max_length}
    theirs, ours = _span_pair(limits, initial)
    if end_before:
        theirs.end()
        ours.end()
    for update in updates:
        theirs.set_attributes(update)
        sdk.set_span_attributes(ours, update)
    assert _state(ours) == _state(theirs)
    if not end_before:
        theirs.end()
        ours.end()
    assert dict(ours.attributes) == dict(theirs.attributes)


def test_set_span_attributes_skips_the_sdk_cleaning_for_clean_values(monkeypatch):
    """The point of it: values already as the SDK keeps them are written without its cleaning
    (and, pinned here, the fields written are where the SDK keeps a live span's attributes)."""
    span = TracerProvider().get_tracer("t").start_span("chat", attributes={"gen_ai.request.model": "m"})
    assert type(span) is sdk._Span and type(span._attributes) is sdk.BoundedAttributes
    assert span._end_time is None and span._attributes._immutable is False
    cleaned = []
    monkeypatch.setattr(type(span._attributes), "_set_items", lambda self, items: cleaned.append(items))
    clean = {"gen_ai.usage.input_tokens": 2000, "gen_ai.response.finish_reasons": ("stop",),
             "tokentrail.cost.nano_usd": 42_000_000, "gen_ai.usage.cost.amount": 0.042, "tokentrail.attributed": True}
    sdk.set_span_attributes(span, clean)
    assert cleaned == [] and dict(span.attributes) == {"gen_ai.request.model": "m", **clean}
    sdk.set_span_attributes(span, {"gen_ai.request.stop_sequences": ["a"]})  # a list: the SDK cleans it
    assert cleaned == [{"gen_ai.request.stop_sequences": ["a"]}]
    span.end()
    sdk.set_span_attributes(trace.INVALID_SPAN, clean)  # not an SDK span: its own set_attributes
