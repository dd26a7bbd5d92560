"""Mistral through the real ``mistralai`` SDK to the fake server: spans, usage and cost in every mode.

Published prices (per million tokens, genai-prices snapshot in force for 2026):
- mistral-small-latest (from 2026-03-16): $0.15 input, $0.015 cached input, $0.60 output;
- mistral-large-2512: $0.50 input, $0.05 cached input, $1.50 output;
- mistral-embed: $0.10 input.
"""

from __future__ import annotations

import asyncio
import gc
from decimal import Decimal

import pytest
from mistralai.client import Mistral
from mistralai.client import errors as mistral_errors
from mistralai.client.utils.eventstreaming import EventStream

import tokentrail
from tokentrail.instrumentation.mistral import MistralInstrumentor
from tokentrail.semconv import attributes as attr
from tokentrail.testing import InMemoryPipeline, mistral_api

from helpers import only_llm_span
from helpers import usd as cost_usd

MODES = ["sync", "sync_stream", "async", "async_stream"]
USAGE_KEYS = (
    attr.GEN_AI_USAGE_INPUT_TOKENS,
    attr.GEN_AI_USAGE_OUTPUT_TOKENS,
    attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
)
M = Decimal(1_000_000)
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def client(mistral_client):
    """This module's ``client`` is Mistral's (conftest's ``client`` is OpenAI's)."""
    return mistral_client


def call(client, mode: str, model: str, **kwargs):
    if mode == "sync":
        return client.chat.complete(model=model, messages=MESSAGES, **kwargs)
    if mode == "sync_stream":
        return list(client.chat.stream(model=model, messages=MESSAGES, **kwargs))

    # The SDK's async HTTP client is bound to one event loop: a fresh client per asyncio.run.
    client = Mistral(api_key="test-key", server_url=client.sdk_configuration.server_url)

    async def run():
        if mode == "async":
            return await client.chat.complete_async(model=model, messages=MESSAGES, **kwargs)
        return [e async for e in await client.chat.stream_async(model=model, messages=MESSAGES, **kwargs)]

    return asyncio.run(run())


WORKED = [
    ("basic", "mistral-small-latest", (10, 6, None), 10 * Decimal("0.15") / M + 6 * Decimal("0.60") / M),
    (
        "cache_hit", "mistral-small-latest", (12_000, 300, 10_000),
        2_000 * Decimal("0.15") / M + 10_000 * Decimal("0.015") / M + 300 * Decimal("0.60") / M,
    ),
    (
        "long_context", "mistral-large-2512", (120_000, 800, None),
        120_000 * Decimal("0.50") / M + 800 * Decimal("1.50") / M,
    ),
    ("tool_call", "mistral-small-latest", (700, 25, None), 700 * Decimal("0.15") / M + 25 * Decimal("0.60") / M),
]


@pytest.mark.parametrize("scenario,model,expected_usage,expected_usd", WORKED, ids=[w[0] for w in WORKED])
def test_usage_and_cost_identical_in_every_mode(server, pipeline, client, scenario, model, expected_usage, expected_usd):
    seen = set()
    for mode in MODES:
        pipeline.clear()
        server.enqueue(mistral_api.scenario(scenario))
        with tokentrail.attribute(tenant="acme", feature="chat"):
            call(client, mode, model)
        span = only_llm_span(pipeline)
        assert span.attributes[attr.GEN_AI_PROVIDER_NAME] == "mistral_ai"
        assert span.attributes.get(attr.GEN_AI_REQUEST_STREAM) is (True if mode.endswith("stream") else None)
        assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"
        assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "priced", dict(span.attributes)
        usage = tuple(span.attributes.get(k) for k in USAGE_KEYS)
        seen.add((usage, span.attributes[attr.TOKENTRAIL_COST_NANO_USD]))
    assert len(seen) == 1, seen
    (usage, nano), = seen
    assert usage[:3] == expected_usage and usage[3] is None and usage[4] is None
    assert Decimal(nano) / Decimal(10**9) == pytest.approx(expected_usd, abs=Decimal("1e-9"))
    assert (usage[2] or 0) <= usage[0]


def test_tool_call_finish_reason(server, pipeline, client):
    server.enqueue(mistral_api.scenario("tool_call"))
    response = call(client, "sync", "mistral-small-latest", tools=[{
        "type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}])
    assert response.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert only_llm_span(pipeline).attributes[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_embeddings(server, pipeline, client, asynchronous):
    inputs = ["one", "two", "three"]
    if asynchronous:
        fresh = Mistral(api_key="test-key", server_url=server.url)
        response = asyncio.run(fresh.embeddings.create_async(model="mistral-embed", inputs=inputs))
    else:
        response = client.embeddings.create(model="mistral-embed", inputs=inputs)
    assert len(response.data) == 3
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_OPERATION_NAME] == "embeddings"
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 24
    assert cost_usd(span) == 24 * Decimal("0.10") / M


def test_caller_sees_exactly_what_the_sdk_returns(server, client):
    def dumps(result):
        items = result if isinstance(result, list) else [result]
        return [(type(r), r.model_dump()) for r in items]

    for mode in MODES:
        server.enqueue(mistral_api.scenario("cache_hit"))
        bare = dumps(call(client, mode, "mistral-small-latest"))
        with InMemoryPipeline(instrument=[MistralInstrumentor()]) as p:
            server.enqueue(mistral_api.scenario("cache_hit"))
            traced = dumps(call(client, mode, "mistral-small-latest"))
            assert len(p.llm_spans()) == 1
        assert traced == bare, mode
    with InMemoryPipeline(instrument=[MistralInstrumentor()]):
        stream = client.chat.stream(model="mistral-small-latest", messages=MESSAGES)
        assert isinstance(stream, EventStream) and stream.__class__ is EventStream
        assert stream.response.status_code == 200
        with stream:
            list(stream)


def test_error_reaches_caller_unchanged_and_span_has_error_type(server, pipeline, client):
    for mode in MODES:
        pipeline.clear()
        server.enqueue(mistral_api.scenario("error"))
        with pytest.raises(mistral_errors.SDKError) as caught:
            call(client, mode, "mistral-small-latest")
        assert caught.value.status_code == 429
        span = only_llm_span(pipeline)
        assert span.attributes[attr.ERROR_TYPE] == "SDKError"
        assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


def test_stream_abandoned_ends_once_without_usage(server, pipeline, client):
    server.enqueue(mistral_api.scenario("cache_hit", pieces=3))
    stream = client.chat.stream(model="mistral-small-latest", messages=MESSAGES)
    next(stream)
    del stream
    gc.collect()
    span = only_llm_span(pipeline)
    # Mistral reports usage on the last chunk only: nothing seen yet, so no cost is invented.
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"
    assert attr.ERROR_TYPE not in span.attributes


def test_stream_closed_by_context_manager_ends_once(server, pipeline, client):
    server.enqueue(mistral_api.scenario("basic", pieces=3))
    with client.chat.stream(model="mistral-small-latest", messages=MESSAGES) as stream:
        next(stream)
    gc.collect()
    assert len(pipeline.llm_spans()) == 1


def test_async_stream_closed_early_ends_once(server, pipeline, client):
    server.enqueue(mistral_api.scenario("basic", pieces=3))

    async def run():
        async with await client.chat.stream_async(model="mistral-small-latest", messages=MESSAGES) as stream:
            async for _ in stream:
                break

    asyncio.run(run())
    gc.collect()
    assert len(pipeline.llm_spans()) == 1


@pytest.mark.parametrize("mode", ["sync_stream", "async_stream"])
def test_stream_broken_mid_way_records_error(server, pipeline, client, mode):
    server.enqueue(mistral_api.scenario("basic", pieces=3, broken_after=2))
    with pytest.raises(Exception) as caught:
        call(client, mode, "mistral-small-latest")
    span = only_llm_span(pipeline)
    assert span.attributes[attr.ERROR_TYPE] == type(caught.value).__qualname__
    with InMemoryPipeline(instrument=False):
        server.enqueue(mistral_api.scenario("basic", pieces=3, broken_after=2))
        with pytest.raises(Exception) as bare:
            call(client, mode, "mistral-small-latest")
    assert type(bare.value) is type(caught.value)


@pytest.mark.parametrize("mode", MODES)
def test_preflight_stop_sends_nothing(server, pipeline, client, mode):
    from tokentrail import preflight

    planned = []

    def stop(call):
        planned.append(call)
        raise tokentrail.BudgetExceeded("budget_usd", limit=1.0, spent=1.0)

    preflight.register(stop)
    try:
        with pytest.raises(tokentrail.BudgetExceeded):
            call(client, mode, "mistral-large-2512", max_tokens=55)
    finally:
        preflight._checks.remove(stop)
    assert server.requests == []
    assert planned[0].provider == "mistral_ai" and planned[0].max_output_tokens == 55
    assert planned[0].estimated_input_tokens > 0
    assert only_llm_span(pipeline).attributes[attr.ERROR_TYPE] == "BudgetExceeded"


def test_structured_parse_is_priced_once(server, pipeline, client):
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str

    server.enqueue(mistral_api.scenario(mistral_api.Scenario(text='{"city": "Paris"}', prompt_tokens=40, completion_tokens=9)))
    parsed = client.chat.parse(response_format=Weather, model="mistral-small-latest", messages=MESSAGES)
    assert parsed.choices[0].message.parsed.city == "Paris"
    span = only_llm_span(pipeline)
    assert cost_usd(span) == 40 * Decimal("0.15") / M + 9 * Decimal("0.60") / M


def test_inconsistent_usage_is_no_usage_and_response_unchanged(server, pipeline, client):
    bad = mistral_api.Scenario(prompt_tokens=100, cached_tokens=500)
    server.enqueue(mistral_api.scenario(bad))
    response = call(client, "sync", "mistral-small-latest")
    assert response.usage.prompt_tokens == 100
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


def test_uninstrument_restores_the_sdk(server):
    from mistralai.client import chat as chat_module

    before = dict(vars(chat_module.Chat))
    with InMemoryPipeline(instrument=[MistralInstrumentor()]):
        assert vars(chat_module.Chat)["complete"] is not before["complete"]
    assert all(vars(chat_module.Chat)[k] is before[k] for k in ("complete", "stream", "complete_async", "stream_async"))
