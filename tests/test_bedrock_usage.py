"""Bedrock usage normalisation across Converse and every InvokeModel body family."""

import json

import pytest

from tokentrail.instrumentation.bedrock.usage import (
    ConverseStreamState,
    InvokeStreamState,
    usage_from_converse,
    usage_from_headers,
    usage_from_invoke,
)
from tokentrail.processor.usage import InvalidUsage, Usage
from tokentrail.testing import bedrock_api as fake

CALL = fake.Call(input_tokens=1000, output_tokens=300, cache_read=6000, cache_write_5m=200, cache_write_1h=800)
MODELS = [
    "us.anthropic.claude-sonnet-4-20250514-v1:0",
    "eu.meta.llama3-2-90b-instruct-v1:0",
    "apac.amazon.nova-pro-v1:0",
    "mistral.mistral-large-2402-v1:0",
    "cohere.command-r-plus-v1:0",
]


def test_converse_input_adds_cache_and_reads_1h_details():
    usage = usage_from_converse(CALL.token_usage())
    assert usage == Usage(input_tokens=8000, output_tokens=300, cache_read_tokens=6000,
                          cache_write_tokens=1000, cache_write_1h_tokens=800)
    assert usage.cache_read_tokens + usage.cache_write_tokens <= usage.input_tokens


def test_converse_stream_metadata_equals_converse():
    state = ConverseStreamState()
    for event in ({"messageStart": {"role": "assistant"}}, {"messageStop": {"stopReason": "end_turn"}},
                  {"metadata": {"usage": CALL.token_usage(), "metrics": {"latencyMs": 1}}}):
        state.add(event)
    assert state.usage() == usage_from_converse(CALL.token_usage()) and state.stop_reason == "end_turn"


@pytest.mark.parametrize("model", MODELS)
def test_invoke_and_invoke_stream_agree_for_every_family(model):
    call = CALL if fake.family(model) in ("anthropic", "nova", "mistral", "cohere") else fake.Call(1000, 300)
    headers = {k.lower(): v for k, v in call.count_headers().items()}
    plain = usage_from_invoke(fake.invoke_body(model, call), headers)
    state = InvokeStreamState()
    for chunk in fake.invoke_stream_chunks(model, call):
        state.add({"chunk": {"bytes": json.dumps(chunk).encode()}})
    assert plain is not None and state.usage() == plain
    assert plain.input_tokens == call.input_tokens + call.cache_read + call.cache_write
    assert plain.output_tokens == call.output_tokens


def test_headers_only_and_garbage():
    assert usage_from_headers({}) is None
    assert usage_from_invoke({"outputs": []}, {"x-amzn-bedrock-input-token-count": "7",
                                               "x-amzn-bedrock-output-token-count": "3"}) == Usage(7, 3)
    with pytest.raises(InvalidUsage):
        usage_from_converse({"inputTokens": "many", "outputTokens": 1})
    with pytest.raises(InvalidUsage):
        usage_from_headers({"x-amzn-bedrock-input-token-count": "7", "x-amzn-bedrock-output-token-count": "-3"})
    assert usage_from_converse(None) is None
