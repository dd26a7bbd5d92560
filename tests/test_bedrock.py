"""Amazon Bedrock Runtime through real boto3 over HTTP to the fake endpoint (binary event streams).

Claude Sonnet 4 on Bedrock has Anthropic's list prices: 8,000 in / 1,200 out = $0.042;
250k in / 2k out = $1.545 (above 200k input: $6 / $22.50 per M).
"""

from __future__ import annotations

import gc
import json
from decimal import Decimal

import boto3
import pytest
from botocore.config import Config
from botocore.eventstream import EventStream
from botocore.exceptions import ClientError, EventStreamError
from opentelemetry.instrumentation import bedrock as openllmetry

import tokentrail
from tokentrail.instrumentation.bedrock import BedrockInstrumentor
from tokentrail.processor.usage import Usage
from tokentrail.semconv import attributes as attr
from tokentrail.testing import bedrock_api as fake
from tokentrail.testing.pipeline import InMemoryPipeline

from helpers import only_llm_span, usd

CLAUDE = "us.anthropic.claude-sonnet-4-20250514-v1:0"
MODELS = {
    "anthropic": CLAUDE,
    "meta": "us.meta.llama3-2-90b-instruct-v1:0",
    "nova": "amazon.nova-pro-v1:0",
    "mistral": "mistral.mistral-large-2402-v1:0",
    "cohere": "cohere.command-r-plus-v1:0",
}
MESSAGES = [{"role": "user", "content": [{"text": "What is the capital of France?"}]}]


def client(server):
    return boto3.client("bedrock-runtime", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id="AKIDTEST", aws_secret_access_key="secret",
                        config=Config(retries={"total_max_attempts": 1}))


def outcome(span):
    """What a user checks: the normalised usage (validated: cache <= input) and the cost."""
    usage = Usage.from_attributes(span.attributes)
    cost = usd(span) if attr.TOKENTRAIL_COST_NANO_USD in span.attributes else None
    return usage, cost, span.attributes[attr.TOKENTRAIL_COST_STATUS]


def invoke_body(model: str) -> str:
    kind = fake.family(model)
    if kind == "anthropic":
        return json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 512,
                           "messages": [{"role": "user", "content": "What is the capital of France?"}]})
    if kind == "nova":
        return json.dumps({"messages": MESSAGES, "inferenceConfig": {"maxTokens": 512}})
    return json.dumps({"prompt": "What is the capital of France?", "max_tokens": 512})


def run(server, operation, model, call=fake.DEFAULT_CALL):
    """Make one call in ``operation`` mode, reading everything, and return what the caller saw."""
    c = client(server)
    if operation == "converse":
        server.enqueue(fake.converse(call))
        result = c.converse(modelId=model, messages=MESSAGES, inferenceConfig={"maxTokens": 512})
        return {k: v for k, v in result.items() if k != "ResponseMetadata"}
    if operation == "converse_stream":
        server.enqueue(fake.converse_stream(call))
        stream = c.converse_stream(modelId=model, messages=MESSAGES)["stream"]
        assert isinstance(stream, EventStream)
        return list(stream)
    if operation == "invoke":
        server.enqueue(fake.invoke(model, call))
        result = c.invoke_model(modelId=model, body=invoke_body(model))
        return result["body"].read(), result["contentType"]
    server.enqueue(fake.invoke_stream(model, call))
    body = c.invoke_model_with_response_stream(modelId=model, body=invoke_body(model))["body"]
    assert isinstance(body, EventStream)
    return list(body)


OPERATIONS = ["converse", "converse_stream", "invoke", "invoke_stream"]


def test_worked_example_converse_costs_0_042_and_carries_the_tenant(server, pipeline):
    with tokentrail.attribute(tenant="acme", feature="search"):
        run(server, "converse", CLAUDE)
    span = only_llm_span(pipeline)
    a = span.attributes
    assert a[attr.GEN_AI_PROVIDER_NAME] == "aws.bedrock" and a[attr.GEN_AI_REQUEST_MODEL] == CLAUDE
    assert a[attr.TOKENTRAIL_TENANT] == "acme"
    assert a[attr.GEN_AI_REQUEST_MAX_TOKENS] == 512
    assert usd(span) == Decimal("0.042")


@pytest.mark.parametrize("family", sorted(MODELS))
def test_every_operation_of_every_family_yields_identical_usage_and_cost(server, pipeline, family):
    model = MODELS[family]
    seen = {}
    for operation in OPERATIONS:
        pipeline.clear()
        run(server, operation, model)
        span = only_llm_span(pipeline)
        assert span.attributes.get(attr.GEN_AI_REQUEST_STREAM) is (True if operation.endswith("stream") else None)
        seen[operation] = outcome(span)
    first = seen["converse"]
    assert all(result == first for result in seen.values()), seen
    assert first[0] == Usage(input_tokens=8000, output_tokens=1200)
    if family == "cohere":  # not on the rate card: marked, never $0
        assert first[1:] == (None, "unpriced")
    else:
        assert first[2] == "priced" and first[1] > 0


@pytest.mark.parametrize("prefix", ["", "us.", "eu.", "apac."])
def test_regional_inference_profiles_price_as_the_model(server, pipeline, prefix):
    run(server, "converse", f"{prefix}anthropic.claude-sonnet-4-20250514-v1:0")
    assert usd(only_llm_span(pipeline)) == Decimal("0.042")


FIXTURES = {
    # name -> (Call, expected USD on Claude Sonnet 4)
    "cache_hit": (fake.Call(input_tokens=1000, output_tokens=500, cache_read=7000), "0.0126"),
    "cache_write": (fake.Call(input_tokens=1000, output_tokens=500, cache_write_5m=3000, cache_write_1h=4000),
                    "0.04575"),
    "long_context": (fake.Call(input_tokens=250_000, output_tokens=2000), "1.545"),
    "tool_call": (fake.Call(stop_reason="tool_use",
                            tool_use={"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}),
                  "0.042"),
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize("operation", OPERATIONS)
def test_claude_fixtures_in_every_operation(server, pipeline, name, operation):
    call, expected = FIXTURES[name]
    run(server, operation, CLAUDE, call)
    span = only_llm_span(pipeline)
    usage, cost, status = outcome(span)
    assert cost == Decimal(expected), (name, operation)
    assert usage.input_tokens == call.input_tokens + call.cache_read + call.cache_write
    assert usage.cache_read_tokens == call.cache_read and usage.cache_write_tokens == call.cache_write
    assert usage.cache_write_1h_tokens == call.cache_write_1h
    if name == "tool_call":
        assert span.attributes[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_use",)
    if name == "long_context":
        assert "context>200k" in span.attributes[attr.TOKENTRAIL_PRICING_TIER]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_caller_sees_exactly_what_boto3_returns(server, operation):
    server.reset()
    plain = run(server, operation, CLAUDE)
    with InMemoryPipeline(instrument=[BedrockInstrumentor()]) as pipe:
        traced = run(server, operation, CLAUDE)
        assert len(pipe.llm_spans()) == 1
    assert traced == plain


def test_errors_reach_the_caller_unchanged_with_their_aws_code(server, pipeline):
    server.enqueue(fake.error(429, "ThrottlingException", "Too many requests"))
    with pytest.raises(ClientError) as raised:
        client(server).converse(modelId=CLAUDE, messages=MESSAGES)
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    span = only_llm_span(pipeline)
    assert span.attributes[attr.ERROR_TYPE] == "ThrottlingException"
    assert attr.GEN_AI_USAGE_COST_AMOUNT not in span.attributes


@pytest.mark.parametrize("operation", ["converse_stream", "invoke_stream"])
def test_stream_error_mid_way_ends_span_once_with_error_type(server, pipeline, operation):
    c = client(server)
    if operation == "converse_stream":
        server.enqueue(fake.converse_stream(error_after=2))
        stream = c.converse_stream(modelId=CLAUDE, messages=MESSAGES)["stream"]
    else:
        server.enqueue(fake.invoke_stream(CLAUDE, error_after=2))
        stream = c.invoke_model_with_response_stream(modelId=CLAUDE, body=invoke_body(CLAUDE))["body"]
    with pytest.raises(EventStreamError):
        for _ in stream:
            pass
    stream.close()
    span = only_llm_span(pipeline)
    assert span.attributes[attr.ERROR_TYPE] == "modelStreamErrorException"
    if operation == "invoke_stream":  # message_start was seen: the input side is known
        assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 8000


def test_stream_closed_early_ends_span_once(server, pipeline):
    server.enqueue(fake.invoke_stream(CLAUDE))
    stream = client(server).invoke_model_with_response_stream(modelId=CLAUDE, body=invoke_body(CLAUDE))["body"]
    next(iter(stream))
    stream.close()
    stream.close()
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 8000
    assert attr.ERROR_TYPE not in span.attributes


def test_converse_stream_abandoned_before_usage_ends_span_once_as_no_usage(server, pipeline):
    server.enqueue(fake.converse_stream())
    stream = client(server).converse_stream(modelId=CLAUDE, messages=MESSAGES)["stream"]
    next(iter(stream))
    del stream
    gc.collect()
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


def test_other_services_and_operations_are_untouched(server, pipeline):
    sts = boto3.client("sts", endpoint_url=server.url, region_name="us-east-1",
                       aws_access_key_id="AKIDTEST", aws_secret_access_key="secret",
                       config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(Exception):
        sts.get_caller_identity()  # the fake has no STS: an error, and no LLM span
    assert pipeline.llm_spans() == []


def test_uninstrument_restores_botocore(server):
    server.reset()
    with InMemoryPipeline(instrument=[BedrockInstrumentor()]) as pipe:
        pass
    run(server, "converse", CLAUDE)
    assert pipe.exporter.get_finished_spans() == ()


def test_converse_stream_closed_at_message_stop_ends_with_what_was_read(server, pipeline):
    server.enqueue(fake.converse_stream())
    stream = client(server).converse_stream(modelId=CLAUDE, messages=MESSAGES)["stream"]
    seen = []
    for event in stream:
        seen.append(event)
        if "messageStop" in event:
            break
    stream.close()
    assert "metadata" not in seen[-1]
    # closing reads nothing more (a stalled server must not hold close()): no usage to price
    assert only_llm_span(pipeline).attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


# --- living with OpenLLMetry's Bedrock instrumentation ------------------------------------------
def _all_operations(server):
    with tokentrail.attribute(tenant="acme"):
        for operation in OPERATIONS:
            run(server, operation, CLAUDE)


@pytest.mark.parametrize("ours_first", [False, True])
def test_openllmetry_beside_ours_one_llm_span_per_call(server, ours_first):
    server.reset()
    both = [openllmetry.BedrockInstrumentor(), BedrockInstrumentor()]
    with InMemoryPipeline(instrument=both[::-1] if ours_first else both) as pipe:
        _all_operations(server)
        spans = pipe.llm_spans()
    assert [s.instrumentation_scope.name for s in spans] == ["tokentrail.instrumentation.bedrock"] * 4
    assert all(usd(s) == Decimal("0.042") and s.attributes[attr.TOKENTRAIL_TENANT] == "acme" for s in spans)


def test_openllmetry_alone_gets_owner_and_cost(server):
    server.reset()
    with InMemoryPipeline(instrument=[openllmetry.BedrockInstrumentor()]) as pipe:
        _all_operations(server)
        spans = pipe.llm_spans()
    assert len(spans) == 4
    for span in spans:
        assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"
        assert span.attributes[attr.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(0.042)


def test_invoke_body_cut_mid_way_still_fails_for_the_caller(server, pipeline):
    response = fake.invoke(CLAUDE)
    payload = json.dumps(response.json).encode()
    # Announce the full length, send half, close: reading the body fails.
    server.enqueue(fake.FakeResponse(body=iter([payload[: len(payload) // 2], b""]), headers={
        **response.headers, "Content-Length": str(len(payload))}, content_type="application/json", abort_after=1))
    result = client(server).invoke_model(modelId=CLAUDE, body=invoke_body(CLAUDE))
    with pytest.raises(Exception):
        result["body"].read()
    span = only_llm_span(pipeline)
    assert span.attributes[attr.ERROR_TYPE]
