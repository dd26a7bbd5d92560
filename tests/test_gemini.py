"""Google GenAI (Gemini API and Vertex AI) through the real SDK to the fake server: spans, usage, cost.

Every scenario runs in the four modes (sync, async) x (unary, stream) on both backends; the
usage and the cost must be identical across modes, and the costs match Google's published
prices (per million tokens):
- gemini-2.5-flash: $0.30 input, $0.03 cached input, $2.50 output (thinking included),
  Search grounding $35 per 1,000 grounded prompts.
- gemini-2.5-pro: prompts <= 200k tokens $1.25 input / $0.125 cached / $10 output;
  prompts > 200k tokens $2.50 / $0.25 / $15.
"""

from __future__ import annotations

import asyncio
import gc
from decimal import Decimal

import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from google.oauth2.credentials import Credentials

import tokentrail
from tokentrail.instrumentation.google_genai import GoogleGenAIInstrumentor
from tokentrail.semconv import attributes as attr
from tokentrail.testing import InMemoryPipeline, gemini_api

from helpers import only_llm_span

MODES = ["sync", "sync_stream", "async", "async_stream"]
USAGE_KEYS = (
    attr.GEN_AI_USAGE_INPUT_TOKENS,
    attr.GEN_AI_USAGE_OUTPUT_TOKENS,
    attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    attr.TOKENTRAIL_USAGE_TOOL_CALLS,
)
M = Decimal(1_000_000)


def gemini_client(server) -> genai.Client:
    return genai.Client(api_key="test-key", http_options={"base_url": server.url})


def vertex_client(server) -> genai.Client:
    # Project/location mode with a ready OAuth token: no metadata server or ADC lookup offline.
    return genai.Client(
        vertexai=True, project="demo-project", location="us-central1",
        credentials=Credentials(token="fake-token"), http_options={"base_url": server.url},
    )


CLIENTS = {"gemini": gemini_client, "vertex": vertex_client}
PROVIDERS = {"gemini": "gcp.gemini", "vertex": "gcp.vertex_ai"}


def call(client: genai.Client, mode: str, model: str, contents="hello", config=None):
    """Run one call in ``mode``; returns the response or the list of chunks."""
    if mode == "sync":
        return client.models.generate_content(model=model, contents=contents, config=config)
    if mode == "sync_stream":
        return list(client.models.generate_content_stream(model=model, contents=contents, config=config))

    async def run():
        if mode == "async":
            return await client.aio.models.generate_content(model=model, contents=contents, config=config)
        return [c async for c in await client.aio.models.generate_content_stream(model=model, contents=contents, config=config)]

    return asyncio.run(run())


def usage_of(span) -> dict:
    return {k: span.attributes.get(k) for k in USAGE_KEYS}


def cost_usd(span) -> Decimal:
    return Decimal(span.attributes[attr.TOKENTRAIL_COST_NANO_USD]) / Decimal(10**9)


# (scenario, model, expected usage, expected USD from the published prices)
WORKED = [
    ("basic", "gemini-2.5-flash", (12, 8, None, None, None, None), 12 * Decimal("0.30") / M + 8 * Decimal("2.50") / M),
    (
        "cache_hit", "gemini-2.5-flash", (12_000, 300, 10_000, None, None, None),
        2_000 * Decimal("0.30") / M + 10_000 * Decimal("0.03") / M + 300 * Decimal("2.50") / M,
    ),
    (
        "thinking", "gemini-2.5-pro", (1_000, 2_000, None, None, 1_500, None),
        1_000 * Decimal("1.25") / M + 2_000 * Decimal("10") / M,
    ),
    (
        "long_context", "gemini-2.5-pro", (250_000, 1_000, None, None, None, None),
        250_000 * Decimal("2.50") / M + 1_000 * Decimal("15") / M,
    ),
    (
        "tool_call", "gemini-2.5-flash", (900, 20, None, None, None, None),
        900 * Decimal("0.30") / M + 20 * Decimal("2.50") / M,
    ),
    (
        "search", "gemini-2.5-flash", (2_800, 400, None, None, None, "web_search=1"),
        2_800 * Decimal("0.30") / M + 400 * Decimal("2.50") / M + Decimal(35) / 1000,
    ),
]


@pytest.mark.parametrize("backend", ["gemini", "vertex"])
@pytest.mark.parametrize("scenario,model,expected_usage,expected_usd", WORKED, ids=[w[0] for w in WORKED])
def test_usage_and_cost_identical_in_every_mode(server, pipeline, backend, scenario, model, expected_usage, expected_usd):
    client = CLIENTS[backend](server)
    seen = []
    for mode in MODES:
        pipeline.clear()
        server.enqueue(gemini_api.scenario(scenario))
        with tokentrail.attribute(tenant="acme", feature="search"):
            call(client, mode, model)
        span = only_llm_span(pipeline)
        assert span.attributes[attr.GEN_AI_PROVIDER_NAME] == PROVIDERS[backend]
        assert span.attributes.get(attr.GEN_AI_REQUEST_STREAM) is (True if mode.endswith("stream") else None)
        assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"
        assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "priced", dict(span.attributes)
        seen.append((mode, usage_of(span), span.attributes[attr.TOKENTRAIL_COST_NANO_USD]))
    usages = {(tuple(u.values()), nano) for _, u, nano in seen}
    assert len(usages) == 1, seen  # streaming and unary: same usage, same cost
    (usage, nano), = usages
    assert usage == expected_usage
    assert Decimal(nano) / Decimal(10**9) == pytest.approx(expected_usd, abs=Decimal("1e-9"))
    cache_read = usage[2] or 0
    assert cache_read <= usage[0] and (usage[4] or 0) <= usage[1]


def test_long_context_cliff_is_priced_above_200k_only(server, pipeline):
    client = gemini_client(server)
    short = gemini_api.Scenario(prompt_tokens=200_000, candidates_tokens=1_000)
    server.enqueue(gemini_api.scenario(short), gemini_api.scenario("long_context"))
    call(client, "sync", "gemini-2.5-pro")
    call(client, "sync", "gemini-2.5-pro")
    at_200k, at_250k = sorted(pipeline.llm_spans(), key=lambda s: s.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS])
    assert cost_usd(at_200k) == 200_000 * Decimal("1.25") / M + 1_000 * Decimal(10) / M  # $0.26
    assert cost_usd(at_250k) == Decimal("0.64")  # not 250k x $1.25 + 1k x $10 = $0.3225
    assert "200k" in at_250k.attributes.get(attr.TOKENTRAIL_PRICING_TIER, "")


def test_caller_sees_exactly_what_the_sdk_returns(server):
    def dumps(result):
        items = result if isinstance(result, list) else [result]
        return [(type(r), r.model_dump(exclude={"sdk_http_response"})) for r in items]

    client = gemini_client(server)
    for mode in MODES:
        server.enqueue(gemini_api.scenario("thinking"))
        bare = dumps(call(client, mode, "gemini-2.5-pro"))
        with InMemoryPipeline(instrument=[GoogleGenAIInstrumentor()]) as p:
            server.enqueue(gemini_api.scenario("thinking"))
            traced = dumps(call(client, mode, "gemini-2.5-pro"))
            assert len(p.llm_spans()) == 1
        assert traced == bare, mode
    sync_gen = client.models.generate_content_stream(model="gemini-2.5-flash", contents="x")
    assert type(sync_gen).__name__ == "generator"
    list(sync_gen)


def test_error_reaches_caller_unchanged_and_span_has_error_type(server, pipeline):
    client = gemini_client(server)
    for mode in MODES:
        pipeline.clear()
        server.enqueue(gemini_api.scenario("error"))
        with pytest.raises(genai_errors.ClientError) as caught:
            call(client, mode, "gemini-2.5-flash")
        assert caught.value.code == 429
        span = only_llm_span(pipeline)
        assert span.attributes[attr.ERROR_TYPE] == "ClientError"
        assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"
        assert attr.TOKENTRAIL_COST_NANO_USD not in span.attributes


def test_stream_abandoned_after_first_chunk_ends_once_with_usage_so_far(server, pipeline):
    client = gemini_client(server)
    server.enqueue(gemini_api.scenario("thinking", pieces=4))
    stream = client.models.generate_content_stream(model="gemini-2.5-pro", contents="x")
    first = next(stream)
    assert first.text
    del stream
    gc.collect()
    span = only_llm_span(pipeline)
    # The first chunk's running totals: full prompt and thoughts, a part of the candidates.
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 1_000
    assert span.attributes[attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 1_500
    assert 1_500 < span.attributes[attr.GEN_AI_USAGE_OUTPUT_TOKENS] < 2_000
    assert attr.ERROR_TYPE not in span.attributes
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "priced"


def test_stream_closed_early_ends_once(server, pipeline):
    client = gemini_client(server)
    server.enqueue(gemini_api.scenario("cache_hit", pieces=3))
    stream = client.models.generate_content_stream(model="gemini-2.5-flash", contents="x")
    next(stream)
    stream.close()
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 10_000
    gc.collect()
    assert len(pipeline.llm_spans()) == 1


def test_async_stream_abandoned_ends_once(server, pipeline):
    client = gemini_client(server)
    server.enqueue(gemini_api.scenario("thinking", pieces=4))

    async def run():
        stream = await client.aio.models.generate_content_stream(model="gemini-2.5-pro", contents="x")
        async for _ in stream:
            break
        await stream.aclose()

    asyncio.run(run())
    gc.collect()
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 1_000


@pytest.mark.parametrize("mode", ["sync_stream", "async_stream"])
def test_stream_broken_mid_way_records_error_and_usage_so_far(server, pipeline, mode):
    client = gemini_client(server)
    bare_error = None
    server.enqueue(gemini_api.scenario("thinking", pieces=4, broken_after=1))
    with pytest.raises(Exception) as caught:
        call(client, mode, "gemini-2.5-pro")
    span = only_llm_span(pipeline)
    assert span.attributes[attr.ERROR_TYPE] == type(caught.value).__qualname__
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 1_000  # the chunk that did arrive
    # Same exception type without us.
    with InMemoryPipeline(instrument=False):
        server.enqueue(gemini_api.scenario("thinking", pieces=4, broken_after=1))
        with pytest.raises(Exception) as bare_error:
            call(client, mode, "gemini-2.5-pro")
    assert type(bare_error.value) is type(caught.value)


def test_automatic_function_calling_makes_one_span_per_billed_request(server, pipeline):
    calls = []

    def get_weather(city: str) -> str:
        """Weather in a city."""
        calls.append(city)
        return "sunny"

    client = gemini_client(server)
    server.enqueue(gemini_api.scenario("tool_call"), gemini_api.scenario("basic"))
    response = client.models.generate_content(
        model="gemini-2.5-flash", contents="weather in Paris?", config=types.GenerateContentConfig(tools=[get_weather])
    )
    assert calls == ["Paris"] and response.text
    spans = pipeline.llm_spans()
    assert len(spans) == 2  # two HTTP requests, both billed
    assert sorted(s.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] for s in spans) == [12, 900]


def test_http_span_is_a_child_of_the_llm_span(server, pipeline):
    # google-genai sends with httpx: its spans (when instrumented) nest under ours. Here we
    # check the context our wrapper makes current during the request via a pre-flight probe.
    from tokentrail import preflight
    from opentelemetry import trace

    seen = []
    probe = lambda planned: seen.append((planned.provider, planned.model, trace.get_current_span().is_recording()))
    preflight.register(probe)
    try:
        call(gemini_client(server), "sync_stream", "models/gemini-2.5-flash")
    finally:
        preflight._checks.remove(probe)
    assert seen == [("gcp.gemini", "gemini-2.5-flash", True)]


def test_no_usage_in_response_is_no_usage_not_zero_dollars(server, pipeline):
    body = gemini_api.response_json(gemini_api.SCENARIOS["basic"], "gemini-2.5-flash")
    del body["usageMetadata"]
    server.enqueue(gemini_api.FakeResponse(json=body))
    call(gemini_client(server), "sync", "gemini-2.5-flash")
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


def test_unknown_model_is_unpriced(server, pipeline):
    call(gemini_client(server), "sync", "tunedModels/1234567890")
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "unpriced"
    assert attr.TOKENTRAIL_COST_NANO_USD not in span.attributes


@pytest.mark.parametrize("mode", MODES)
def test_preflight_stop_sends_nothing(server, pipeline, mode):
    from tokentrail import preflight

    planned = []

    def stop(call):
        planned.append(call)
        raise tokentrail.BudgetExceeded("budget_usd", limit=1.0, spent=1.0)

    preflight.register(stop)
    try:
        with pytest.raises(tokentrail.BudgetExceeded):
            call(vertex_client(server), mode, "gemini-2.5-pro", contents="a" * 3000,
                 config=types.GenerateContentConfig(max_output_tokens=77))
    finally:
        preflight._checks.remove(stop)
    assert server.requests == []
    assert planned[0].provider == "gcp.vertex_ai" and planned[0].model == "gemini-2.5-pro"
    assert planned[0].max_output_tokens == 77 and planned[0].estimated_input_tokens >= 1000
    assert only_llm_span(pipeline).attributes[attr.ERROR_TYPE] == "BudgetExceeded"


def test_vertex_express_mode_api_key(server, pipeline):
    client = genai.Client(vertexai=True, api_key="express-key", http_options={"base_url": server.url})
    server.enqueue(gemini_api.scenario("cache_hit"))
    call(client, "sync", "gemini-2.5-flash")
    assert server.requests[-1].path == "/v1beta1/publishers/google/models/gemini-2.5-flash:generateContent"
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_PROVIDER_NAME] == "gcp.vertex_ai"
    assert cost_usd(span) == 2_000 * Decimal("0.30") / M + 10_000 * Decimal("0.03") / M + 300 * Decimal("2.50") / M


def test_chat_sessions_are_priced_per_turn(server, pipeline):
    client = gemini_client(server)  # kept referenced: a collected client closes its HTTP client
    chat = client.chats.create(model="gemini-2.5-flash")
    server.enqueue(gemini_api.scenario("basic"), gemini_api.scenario("cache_hit"))
    chat.send_message("hello")
    list(chat.send_message_stream("again"))
    spans = pipeline.llm_spans()
    assert [s.attributes.get(attr.GEN_AI_REQUEST_STREAM) for s in spans] == [None, True]
    assert [s.attributes[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] for s in spans if
            attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS in s.attributes] == [10_000]


@pytest.mark.parametrize("mode", MODES)
def test_inconsistent_usage_is_no_usage_and_response_unchanged(server, pipeline, mode):
    # More cached tokens than prompt tokens: not a usage anyone can price.
    bad = gemini_api.Scenario(prompt_tokens=100, cached_tokens=500, candidates_tokens=10)
    server.enqueue(gemini_api.scenario(bad))
    result = call(gemini_client(server), mode, "gemini-2.5-flash")
    last = result[-1] if isinstance(result, list) else result
    assert last.usage_metadata.cached_content_token_count == 500
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"
    assert attr.GEN_AI_USAGE_INPUT_TOKENS not in span.attributes


def test_uninstrument_restores_the_sdk(server):
    from google.genai import models

    before = {name: models.Models.__dict__[name] for name in ("_generate_content", "_generate_content_stream")}
    inst = GoogleGenAIInstrumentor()
    with InMemoryPipeline(instrument=[inst]):
        assert models.Models.__dict__["_generate_content"] is not before["_generate_content"]
    assert {name: models.Models.__dict__[name] for name in before} == before
    assert models.AsyncModels._generate_content.__qualname__ == "AsyncModels._generate_content"


@pytest.mark.parametrize("mode", MODES)
def test_flex_tier_is_recorded_and_priced_as_the_data_says(server, pipeline, mode):
    # The requested tier is recorded; genai-prices has no Flex price for gemini-2.5-flash, so
    # the call is priced (and labelled) standard (README, Google GenAI).
    server.enqueue(gemini_api.scenario("thinking"))
    call(gemini_client(server), mode, "gemini-2.5-flash", config=types.GenerateContentConfig(service_tier="flex"))
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_SERVICE_TIER] == "flex"
    assert span.attributes[attr.TOKENTRAIL_PRICING_TIER] == "standard"
    assert cost_usd(span) == 1_000 * Decimal("0.30") / M + 2_000 * Decimal("2.50") / M


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("backend", ["gemini", "vertex"])
def test_embed_content_priced_per_input_token(server, pipeline, backend, asynchronous):
    # gemini-embedding-001: $0.15 per million input tokens. The fake counts 1 token per 4 chars.
    client = CLIENTS[backend](server)
    texts = ["hello world!", "a longer text to embed here"] if backend == "gemini" else "hello world!"
    if asynchronous:
        response = asyncio.run(client.aio.models.embed_content(model="gemini-embedding-001", contents=texts))
    else:
        response = client.models.embed_content(model="gemini-embedding-001", contents=texts)
    assert response.embeddings and response.embeddings[0].values
    span = only_llm_span(pipeline)
    tokens = 3 + 6 if backend == "gemini" else 3
    assert span.attributes[attr.GEN_AI_OPERATION_NAME] == "embeddings"
    assert span.attributes[attr.GEN_AI_PROVIDER_NAME] == PROVIDERS[backend]
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == tokens
    assert cost_usd(span) == tokens * Decimal("0.15") / M


def test_vertex_predict_embeddings_count_statistics_tokens(server, pipeline):
    # text-embedding-005 reports per-embedding statistics (float counts) and is billed per
    # character, which the rate card does not carry: the tokens are recorded, the call unpriced.
    client = vertex_client(server)
    client.models.embed_content(model="text-embedding-005", contents=["hello world!", "another"])
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 3 + 1
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "unpriced"
