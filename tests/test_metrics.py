"""Cost metrics: allowlisted attributes, USD buckets, SDK cardinality limit, resource env,
and the instrumentation-side fallback ``record_llm_call``."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tokentrail.processor.metrics import COST_BUCKETS_USD, ENV_SEMCONV_OPT_IN, metric_views, record_llm_call
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as m
from tokentrail.testing import InMemoryPipeline, gemini_api, mistral_api, openai_api


def _llm_attrs(**extra):
    base = {
        attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_OPERATION_NAME: "chat",
        attr.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        attr.GEN_AI_USAGE_INPUT_TOKENS: 1000, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 100,
    }
    base.update(extra)
    return base


def _emit(pipeline, attributes):
    with pipeline.tracer("foreign").start_as_current_span("chat", attributes=attributes):
        pass


def test_metric_attributes_are_an_allowlist():
    with InMemoryPipeline(instrument=False, resource_attributes={attr.DEPLOYMENT_ENVIRONMENT_NAME: "prod"}) as p:
        _emit(p, _llm_attrs(**{
            attr.TOKENTRAIL_TENANT: "acme", attr.TOKENTRAIL_TEAM: "support",
            attr.USER_ID: "u-42", attr.GEN_AI_RESPONSE_ID: "resp-123", attr.GEN_AI_CONVERSATION_ID: "conv-9",
            attr.SERVER_ADDRESS: "api.openai.com",
        }))
        [point] = p.metric_points(m.TOKENTRAIL_COST)
        assert dict(point.attributes) == {
            attr.GEN_AI_PROVIDER_NAME: "openai",
            attr.GEN_AI_OPERATION_NAME: "chat",
            attr.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            attr.TOKENTRAIL_TENANT: "acme",
            attr.TOKENTRAIL_TEAM: "support",
            attr.TOKENTRAIL_COST_STATUS: "priced",
            attr.TOKENTRAIL_ATTRIBUTED: True,
            # from the resource, so environments can be split without a span attribute
            attr.DEPLOYMENT_ENVIRONMENT_NAME: "prod",
        }
        for point in p.metric_points(m.TOKENTRAIL_TOKENS):
            assert set(point.attributes) - set(dict(point.attributes)) == set()
            assert attr.USER_ID not in point.attributes and attr.GEN_AI_RESPONSE_ID not in point.attributes


def test_cost_histogram_has_usd_buckets():
    with InMemoryPipeline(instrument=False) as p:
        _emit(p, _llm_attrs())
        [point] = p.metric_points(m.TOKENTRAIL_COST)
        assert tuple(point.explicit_bounds) == COST_BUCKETS_USD
        # gpt-4o-mini: 1000 x $0.15/M + 100 x $0.60/M = $0.00021, in the 0.0001-0.0005 bucket
        assert point.sum == pytest.approx(0.00021)
        assert point.bucket_counts[1] == 1


def test_sdk_cardinality_limit_caps_a_noisy_dimension():
    with InMemoryPipeline(instrument=False, cardinality_limit=5) as p:
        for i in range(40):
            _emit(p, _llm_attrs(**{attr.TOKENTRAIL_TENANT: f"tenant-{i}"}))
        points = p.metric_points(m.TOKENTRAIL_COST)
        assert len(points) <= 5 + 1  # the limit, plus the SDK's overflow series
        # Nothing is lost: the overflow series keeps the rest of the spend.
        assert sum(pt.count for pt in points) == 40
        assert any(pt.attributes.get("otel.metric.overflow") for pt in points)


def test_record_llm_call_fallback_without_pipeline():
    """What an instrumentation records when no CostSpanProcessor sees its span."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=metric_views())
    attrs = _llm_attrs(**{
        attr.TOKENTRAIL_COST_STATUS: "priced", attr.TOKENTRAIL_COST_NANO_USD: 210_000,
        attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 400, attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 30,
        attr.TOKENTRAIL_FEATURE: "search",
    })
    record_llm_call(attrs, 0.25, meter_provider=provider, resource_attributes={})
    data = {mt.name: mt.data.data_points for rm in reader.get_metrics_data().resource_metrics
            for sm in rm.scope_metrics for mt in sm.metrics}
    [cost] = data[m.TOKENTRAIL_COST]
    assert cost.sum == 0.00021 and cost.attributes[attr.TOKENTRAIL_ATTRIBUTED] is False
    tokens = {pt.attributes[attr.TOKENTRAIL_TOKEN_TYPE]: pt.value for pt in data[m.TOKENTRAIL_TOKENS]}
    # input is uncached input; output includes reasoning, as upstream counts it
    assert tokens == {"input": 600, "cache_read": 400, "output": 100, "reasoning": 30}
    [duration] = data[m.GEN_AI_CLIENT_OPERATION_DURATION]
    assert duration.sum == 0.25
    usage = {pt.attributes[attr.GEN_AI_TOKEN_TYPE]: pt.sum for pt in data[m.GEN_AI_CLIENT_TOKEN_USAGE]}
    assert usage == {"input": 1000, "output": 100}
    provider.shutdown()


def test_record_llm_call_adds_static_defaults(monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_ATTRIBUTES", "team=support")
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=metric_views())
    record_llm_call(_llm_attrs(**{attr.TOKENTRAIL_COST_STATUS: "unpriced"}), 0.1, meter_provider=provider)
    [point] = [pt for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
               for mt in sm.metrics if mt.name == m.TOKENTRAIL_CALLS_UNPRICED for pt in mt.data.data_points]
    assert point.value == 1 and point.attributes[attr.TOKENTRAIL_TEAM] == "support"
    provider.shutdown()


def test_record_llm_call_never_raises():
    record_llm_call({attr.GEN_AI_USAGE_INPUT_TOKENS: object()}, "not a number")  # type: ignore[arg-type]
    record_llm_call(None, None)  # type: ignore[arg-type]


# -- upstream GenAI metrics: the default generation and OTEL_SEMCONV_STABILITY_OPT_IN ---------------


def _metric_names(pipeline) -> set[str]:
    return {mt.name for rm in pipeline.metrics().resource_metrics for sm in rm.scope_metrics for mt in sm.metrics}


def _points_per_call(pipeline) -> int:
    return sum(len(mt.data.data_points) for rm in pipeline.metrics().resource_metrics for sm in rm.scope_metrics
               for mt in sm.metrics)


def _chat_and_embed(server, client):
    server.enqueue(openai_api.reply(prompt_tokens=2_000, completion_tokens=500, model="gpt-4o-2024-08-06"))
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    server.enqueue(openai_api.reply(prompt_tokens=300))
    client.embeddings.create(model="text-embedding-3-small", input="hello")


def test_default_upstream_metrics_are_the_v1_36_generation(make_pipeline, openai_client, server, monkeypatch):
    monkeypatch.delenv(ENV_SEMCONV_OPT_IN, raising=False)
    pipeline = make_pipeline()
    _chat_and_embed(server, openai_client)
    names = _metric_names(pipeline)
    assert {m.GEN_AI_CLIENT_TOKEN_USAGE, m.GEN_AI_CLIENT_OPERATION_DURATION} <= names
    assert not names & {m.GEN_AI_CLIENT_INFERENCE_DURATION, m.GEN_AI_CLIENT_EMBEDDINGS_DURATION,
                        m.GEN_AI_CLIENT_INFERENCE_OPERATION_INPUT_TOKENS}
    assert pipeline.metric_sum(m.GEN_AI_CLIENT_TOKEN_USAGE, attributes={attr.GEN_AI_TOKEN_TYPE: "input"}) == 2_300
    assert pipeline.metric_count(m.GEN_AI_CLIENT_OPERATION_DURATION) == 2


@pytest.mark.parametrize("opt_in", ["gen_ai_latest_experimental", "http, gen_ai_latest_experimental ,database"])
def test_opt_in_emits_the_inference_and_embeddings_metrics_instead(make_pipeline, openai_client, server, monkeypatch,
                                                                   opt_in):
    monkeypatch.delenv(ENV_SEMCONV_OPT_IN, raising=False)
    before = make_pipeline()
    _chat_and_embed(server, openai_client)
    default_points = _points_per_call(before)
    before.close()

    monkeypatch.setenv(ENV_SEMCONV_OPT_IN, opt_in)
    pipeline = make_pipeline()
    _chat_and_embed(server, openai_client)
    names = _metric_names(pipeline)
    assert not names & {m.GEN_AI_CLIENT_TOKEN_USAGE, m.GEN_AI_CLIENT_OPERATION_DURATION}
    chat = {attr.GEN_AI_OPERATION_NAME: "chat", attr.GEN_AI_REQUEST_MODEL: "gpt-4o"}
    assert pipeline.metric_sum(m.GEN_AI_CLIENT_INFERENCE_OPERATION_INPUT_TOKENS, attributes=chat) == 2_000
    assert pipeline.metric_sum(m.GEN_AI_CLIENT_INFERENCE_OPERATION_OUTPUT_TOKENS, attributes=chat) == 500
    assert pipeline.metric_count(m.GEN_AI_CLIENT_INFERENCE_DURATION, attributes=chat) == 1
    embed = {attr.GEN_AI_OPERATION_NAME: "embeddings"}
    assert pipeline.metric_sum(m.GEN_AI_CLIENT_EMBEDDINGS_OPERATION_INPUT_TOKENS, attributes=embed) == 300
    assert pipeline.metric_count(m.GEN_AI_CLIENT_EMBEDDINGS_DURATION, attributes=embed) == 1
    assert pipeline.metric_count(m.GEN_AI_CLIENT_INFERENCE_DURATION, attributes=embed) == 0
    # Never both generations: no more points than the default (embeddings have no output histogram).
    assert _points_per_call(pipeline) == default_points - 1
    # tokentrail's own metrics do not change with the opt-in.
    assert pipeline.metric_sum(m.TOKENTRAIL_COST) == pytest.approx(0.010006)


def test_upstream_points_carry_server_address_and_port():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=metric_views())
    attrs = _llm_attrs(**{attr.TOKENTRAIL_COST_STATUS: "priced", attr.TOKENTRAIL_COST_NANO_USD: 210_000,
                          attr.SERVER_ADDRESS: "api.openai.com", attr.SERVER_PORT: 443})
    record_llm_call(attrs, 0.25, meter_provider=provider, resource_attributes={})
    data = {mt.name: mt.data.data_points for rm in reader.get_metrics_data().resource_metrics
            for sm in rm.scope_metrics for mt in sm.metrics}
    for name in (m.GEN_AI_CLIENT_OPERATION_DURATION, m.GEN_AI_CLIENT_TOKEN_USAGE):
        for point in data[name]:
            assert (point.attributes[attr.SERVER_ADDRESS], point.attributes[attr.SERVER_PORT]) == ("api.openai.com", 443)
    # Owner breakdowns stay on tokentrail.* only; the server is not one of their dimensions.
    [cost] = data[m.TOKENTRAIL_COST]
    assert attr.SERVER_ADDRESS not in cost.attributes and attr.SERVER_PORT not in cost.attributes
    provider.shutdown()


USER = [{"role": "user", "content": "hi"}]
CALLS = {
    "openai": lambda c, s: c.chat.completions.create(model="gpt-4o", messages=USER),
    "anthropic": lambda c, s: c.messages.create(model="claude-sonnet-4-20250514", max_tokens=100, messages=USER),
    "gcp.gemini": lambda c, s: (s.enqueue(gemini_api.scenario("basic")),
                                c.models.generate_content(model="gemini-2.5-flash", contents="hi")),
    "mistral_ai": lambda c, s: (s.enqueue(mistral_api.scenario("basic")),
                                c.chat.complete(model="mistral-small-latest", messages=USER)),
    "aws.bedrock": lambda c, s: c.converse(modelId="us.anthropic.claude-sonnet-4-20250514-v1:0",
                                           messages=[{"role": "user", "content": [{"text": "hi"}]}]),
}
CLIENTS = {"openai": "openai_client", "anthropic": "anthropic_client", "gcp.gemini": "genai_client",
           "mistral_ai": "mistral_client", "aws.bedrock": "boto3_bedrock_client"}


@pytest.mark.parametrize("provider", sorted(CALLS))
def test_every_provider_reports_server_port_with_server_address(request, pipeline, server, provider):
    client = request.getfixturevalue(CLIENTS[provider])
    CALLS[provider](client, server)
    [span] = pipeline.llm_spans()
    port = int(server.url.rsplit(":", 1)[1])
    assert span.attributes[attr.GEN_AI_PROVIDER_NAME] == provider
    assert (span.attributes[attr.SERVER_ADDRESS], span.attributes[attr.SERVER_PORT]) == ("127.0.0.1", port)
    assert attr.GEN_AI_REQUEST_STREAM not in span.attributes  # upstream: set on streaming requests only
    [duration] = pipeline.metric_points(m.GEN_AI_CLIENT_OPERATION_DURATION)
    assert (duration.attributes[attr.SERVER_ADDRESS], duration.attributes[attr.SERVER_PORT]) == ("127.0.0.1", port)
