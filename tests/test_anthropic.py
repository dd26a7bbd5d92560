"""Anthropic through the real anthropic SDK over HTTP to the fake API: spans, usage and USD.

Worked numbers (Claude Sonnet 4: $3 / $15 per M; cache reads 0.1x, 5-minute writes 1.25x,
1-hour writes 2x input; web search $10 per 1,000; above 200k input $6 / $22.50):
8,000 in / 1,200 out = $0.042; 250k in / 2k out = $1.545.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import warnings
from decimal import Decimal

import anthropic
import pytest
from anthropic.lib.streaming import MessageStream
from anthropic.types import Message

import tokentrail
from tokentrail.instrumentation.anthropic import AnthropicInstrumentor
from tokentrail.processor.usage import Usage
from tokentrail.semconv import attributes as attr
from tokentrail.testing import anthropic_api as fake
from tokentrail.testing import bedrock_api
from tokentrail.testing.pipeline import InMemoryPipeline
from tokentrail.testing.server import FakeResponse

from helpers import only_llm_span, usd

MODEL = "claude-sonnet-4-20250514"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

# name -> (usage block, content, expected USD)
FIXTURES = {
    "worked": (fake.usage_block(8000, 1200), None, "0.042"),
    "cache_hit": (fake.usage_block(1000, 500, cache_read_input_tokens=7000), None, "0.0126"),
    "cache_write": (fake.usage_block(1000, 500, cache_creation_5m=3000, cache_creation_1h=4000), None, "0.04575"),
    "long_context": (fake.usage_block(250_000, 2000), None, "1.545"),
    "web_search": (fake.usage_block(8000, 1200, web_search_requests=2),
                   [*fake.web_search_blocks("capital of France"), fake.text_block("Paris.")], "0.062"),
    "tool_call": (fake.usage_block(8000, 1200), [fake.tool_use_block("get_weather", {"city": "Paris"})], "0.042"),
    "thinking": (fake.usage_block(8000, 1200, thinking_tokens=700), None, "0.042"),
}


def client(server, **kw):
    return anthropic.Anthropic(base_url=server.url, api_key="test-key", max_retries=0, **kw)


def aclient(server, **kw):
    return anthropic.AsyncAnthropic(base_url=server.url, api_key="test-key", max_retries=0, **kw)


def check_invariants(span) -> Usage:
    usage = Usage.from_attributes(span.attributes)  # validates: cache parts <= input, reasoning <= output
    assert usage is not None
    return usage


def enqueue(server, name, *, stream, message_id="msg_fixed"):
    usage, content, _ = FIXTURES[name]
    stop = "tool_use" if name == "tool_call" else "end_turn"
    if stream:
        server.enqueue(FakeResponse(sse=fake.message_events(usage=usage, content=content, stop_reason=stop,
                                                             message_id=message_id)))
    else:
        server.enqueue(FakeResponse(json=fake.message(usage=usage, content=content, stop_reason=stop,
                                                      message_id=message_id)))


# --- worked costs and attribution --------------------------------------------------------
def test_worked_example_costs_0_042_and_carries_the_tenant(server, pipeline):
    with tokentrail.attribute(tenant="acme", feature="faq"):
        message = client(server).messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES)
    assert isinstance(message, Message)
    span = only_llm_span(pipeline)
    a = span.attributes
    assert a[attr.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert a[attr.GEN_AI_REQUEST_MODEL] == MODEL and a[attr.GEN_AI_RESPONSE_MODEL] == MODEL
    assert a[attr.TOKENTRAIL_TENANT] == "acme" and a[attr.TOKENTRAIL_FEATURE] == "faq"
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == 8000 and a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 1200
    assert usd(span) == Decimal("0.042")
    assert a[attr.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(0.042)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_costs_match_published_prices(server, pipeline, name):
    enqueue(server, name, stream=False)
    client(server).messages.create(model=MODEL, max_tokens=4096, messages=MESSAGES)
    span = only_llm_span(pipeline)
    usage = check_invariants(span)
    assert usd(span) == Decimal(FIXTURES[name][2])
    if name == "long_context":
        assert "context>200k" in span.attributes[attr.TOKENTRAIL_PRICING_TIER]
    if name == "cache_hit":
        assert (usage.input_tokens, usage.cache_read_tokens) == (8000, 7000)
    if name == "cache_write":
        assert (usage.input_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens) == (8000, 7000, 4000)
    if name == "web_search":
        assert usage.tool_calls == {"web_search": 2}
        assert span.attributes[attr.TOKENTRAIL_COST_FEES] == pytest.approx(0.02)
    if name == "tool_call":
        assert span.attributes[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_use",)
    if name == "thinking":
        assert usage.reasoning_tokens == 700 and usage.output_tokens == 1200


# --- every mode yields the same usage and cost -------------------------------------------------
def _sync_create(server):
    client(server).messages.create(model=MODEL, max_tokens=4096, messages=MESSAGES)


def _sync_stream_true(server):
    for _ in client(server).messages.create(model=MODEL, max_tokens=4096, messages=MESSAGES, stream=True):
        pass


def _sync_stream_helper(server):
    with client(server).messages.stream(model=MODEL, max_tokens=4096, messages=MESSAGES) as stream:
        for _ in stream.text_stream:
            pass
        stream.get_final_message()


def _async_create(server):
    async def run():
        async with aclient(server) as c:
            await c.messages.create(model=MODEL, max_tokens=4096, messages=MESSAGES)
    asyncio.run(run())


def _async_stream_true(server):
    async def run():
        async with aclient(server) as c:
            stream = await c.messages.create(model=MODEL, max_tokens=4096, messages=MESSAGES, stream=True)
            async for _ in stream:
                pass
    asyncio.run(run())


def _async_stream_helper(server):
    async def run():
        async with aclient(server) as c:
            async with c.messages.stream(model=MODEL, max_tokens=4096, messages=MESSAGES) as stream:
                await stream.get_final_message()
    asyncio.run(run())


def _beta_create(server):
    client(server).beta.messages.create(model=MODEL, max_tokens=4096, messages=MESSAGES)


def _beta_stream(server):
    with client(server).beta.messages.stream(model=MODEL, max_tokens=4096, messages=MESSAGES) as stream:
        stream.get_final_message()


MODES = {
    "create": (_sync_create, False), "create_stream": (_sync_stream_true, True),
    "stream_helper": (_sync_stream_helper, True), "async_create": (_async_create, False),
    "async_create_stream": (_async_stream_true, True), "async_stream_helper": (_async_stream_helper, True),
    "beta_create": (_beta_create, False), "beta_stream": (_beta_stream, True),
}


@pytest.mark.parametrize("name", ["worked", "cache_hit", "cache_write", "web_search", "long_context", "thinking"])
def test_every_mode_yields_identical_usage_and_cost(server, pipeline, name):
    seen = {}
    for mode, (run, streamed) in MODES.items():
        pipeline.clear()
        enqueue(server, name, stream=streamed)
        run(server)
        span = only_llm_span(pipeline)
        assert span.attributes.get(attr.GEN_AI_REQUEST_STREAM) is (True if streamed else None), mode
        seen[mode] = (check_invariants(span), usd(span), span.attributes[attr.TOKENTRAIL_COST_STATUS])
    first = seen["create"]
    assert all(result == first for result in seen.values()), seen
    assert first[1] == Decimal(FIXTURES[name][2])


# --- the caller sees exactly what the SDK returns ---------------------------------------------
def _results(server):
    enqueue(server, "web_search", stream=False)
    message = client(server).messages.create(model=MODEL, max_tokens=4096, messages=MESSAGES)
    enqueue(server, "web_search", stream=True)
    stream = client(server).messages.create(model=MODEL, max_tokens=4096, messages=MESSAGES, stream=True)
    stream_type_ok = isinstance(stream, anthropic.Stream)
    events = [e.model_dump() for e in stream]
    enqueue(server, "web_search", stream=True)
    with client(server).messages.stream(model=MODEL, max_tokens=4096, messages=MESSAGES) as helper:
        helper_ok = isinstance(helper, MessageStream)
        text = "".join(helper.text_stream)
        final = helper.get_final_message().model_dump()
    return message.model_dump(), stream_type_ok, events, helper_ok, text, final


def test_caller_sees_exactly_what_the_sdk_returns(server):
    server.reset()
    plain = _results(server)
    with InMemoryPipeline(instrument=[AnthropicInstrumentor()]) as pipe:
        traced = _results(server)
        assert len(pipe.llm_spans()) == 3
    assert traced == plain
    assert traced[1] and traced[3] and traced[4] == "Paris."


def test_api_errors_reach_the_caller_unchanged_and_mark_the_span(server, pipeline):
    server.enqueue(fake.error(429, "rate_limit_error", "slow down"))
    with pytest.raises(anthropic.RateLimitError) as raised:
        client(server).messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert raised.value.status_code == 429
    span = only_llm_span(pipeline)
    assert span.attributes[attr.ERROR_TYPE] == "RateLimitError"
    assert attr.GEN_AI_USAGE_COST_AMOUNT not in span.attributes
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


# --- streams that do not finish normally end their span exactly once ----------------------------
def test_stream_error_mid_way_ends_span_once_with_usage_so_far(server, pipeline):
    usage = fake.usage_block(5000, 300)
    server.enqueue(FakeResponse(sse=fake.message_events(usage=usage, error={"type": "overloaded_error",
                                                                            "message": "Overloaded"})))
    stream = client(server).messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, stream=True)
    with pytest.raises(anthropic.APIStatusError) as raised:
        for _ in stream:
            pass
    stream.close()
    span = only_llm_span(pipeline)
    assert span.attributes[attr.ERROR_TYPE] == type(raised.value).__qualname__
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 5000  # message_start was seen


def test_stream_cut_short_by_the_server_ends_span_once_with_usage_so_far(server, pipeline):
    # The connection closes after message_start and one block event: SSE ends there for the SDK too.
    server.enqueue(FakeResponse(sse=fake.message_events(usage=fake.usage_block(5000, 300)), abort_after=3))
    with client(server).messages.stream(model=MODEL, max_tokens=10, messages=MESSAGES) as stream:
        stream.get_final_message()
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 5000
    assert span.attributes[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 1  # message_start's count: all we were told


def test_stream_closed_early_ends_span_once(server, pipeline):
    server.enqueue(FakeResponse(sse=fake.message_events(usage=fake.usage_block(5000, 300))))
    stream = client(server).messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, stream=True)
    next(iter(stream))
    stream.close()
    stream.close()
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 5000
    assert attr.ERROR_TYPE not in span.attributes


def test_stream_abandoned_ends_span_once(server, pipeline):
    server.enqueue(FakeResponse(sse=fake.message_events(usage=fake.usage_block(5000, 300))))
    stream = client(server).messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, stream=True)
    next(iter(stream))
    del stream
    gc.collect()
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 5000


def test_async_stream_closed_early_ends_span_once(server, pipeline):
    async def run():
        server.enqueue(FakeResponse(sse=fake.message_events(usage=fake.usage_block(5000, 300))))
        async with aclient(server) as c:
            stream = await c.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, stream=True)
            await stream.__anext__()
            await stream.close()
    asyncio.run(run())
    assert only_llm_span(pipeline).attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 5000


def test_malformed_usage_is_no_usage_never_a_crash(server, pipeline):
    body = fake.message()
    body["usage"] = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": -3}
    server.enqueue(FakeResponse(json=body))
    message = client(server).messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert message.usage.cache_read_input_tokens == -3
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"
    assert attr.GEN_AI_USAGE_COST_AMOUNT not in span.attributes


def test_unknown_model_is_unpriced_never_zero(server, pipeline):
    server.enqueue(FakeResponse(json=fake.message(model="claude-from-the-future")))
    client(server).messages.create(model="claude-from-the-future", max_tokens=10, messages=MESSAGES)
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "unpriced"
    assert attr.GEN_AI_USAGE_COST_AMOUNT not in span.attributes


# --- free calls, raw responses -----------------------------------------------------------------
def test_count_tokens_is_free(server, pipeline):
    result = client(server).messages.count_tokens(model=MODEL, messages=MESSAGES)
    assert result.input_tokens > 0
    assert [s for s in pipeline.spans() if attr.GEN_AI_USAGE_COST_AMOUNT in s.attributes] == []
    assert pipeline.llm_spans() == [] or all(
        s.attributes.get(attr.TOKENTRAIL_COST_STATUS) != "priced" for s in pipeline.llm_spans())


def test_with_raw_response_is_priced(server, pipeline):
    raw = client(server).messages.with_raw_response.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert raw.parse().usage.input_tokens == 8000
    assert usd(only_llm_span(pipeline)) == Decimal("0.042")


# --- Bedrock and Vertex clients of the anthropic SDK ---------------------------------------------
def bedrock_client(server):
    return anthropic.AnthropicBedrock(aws_access_key="AKIDTEST", aws_secret_key="secret", aws_region="us-east-1",
                                      base_url=server.url, max_retries=0)


def vertex_client(server):
    return anthropic.AnthropicVertex(region="us-east5", project_id="test-project", access_token="token",
                                     base_url=f"{server.url}/v1", max_retries=0)


@pytest.mark.parametrize("which", ["bedrock", "vertex"])
def test_cloud_clients_are_their_provider_and_priced_at_its_rates(server, pipeline, which):
    make, model, provider = {
        "bedrock": (bedrock_client, "us.anthropic.claude-sonnet-4-20250514-v1:0", "aws.bedrock"),
        "vertex": (vertex_client, "claude-sonnet-4@20250514", "gcp.vertex_ai"),
    }[which]
    c = make(server)
    c.messages.create(model=model, max_tokens=1024, messages=MESSAGES)
    with c.messages.stream(model=model, max_tokens=1024, messages=MESSAGES) as stream:
        stream.get_final_message()
    for _ in c.messages.create(model=model, max_tokens=1024, messages=MESSAGES, stream=True):
        pass
    spans = pipeline.llm_spans()
    assert len(spans) == 3
    for span in spans:
        assert span.attributes[attr.GEN_AI_PROVIDER_NAME] == provider
        assert span.attributes[attr.GEN_AI_REQUEST_MODEL] == model
        assert usd(span) == Decimal("0.042")
    usages = [check_invariants(s) for s in spans]
    assert all(u == usages[0] for u in usages)


# --- the SDK's own OpenTelemetry spans --------------------------------------------------------
def test_native_sdk_telemetry_on_still_one_llm_span_per_call(server, pipeline):
    native = client(server, open_telemetry={"tracer_provider": pipeline.tracer_provider})
    native.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    with native.messages.stream(model=MODEL, max_tokens=10, messages=MESSAGES) as stream:
        stream.get_final_message()
    native.messages.count_tokens(model=MODEL, messages=MESSAGES)
    names = [s.name for s in pipeline.spans()]
    assert "anthropic.messages.create" not in names
    assert "anthropic.messages.count_tokens" in names  # calls we do not trace keep their native span
    spans = pipeline.llm_spans()
    priced = [s for s in spans if attr.GEN_AI_USAGE_COST_AMOUNT in s.attributes]
    assert len(priced) == 2 and all(usd(s) == Decimal("0.042") for s in priced)


def test_each_try_carries_the_calls_trace_context_and_owner_baggage(server, pipeline):
    """The SDK sets the propagation headers of the call's span on every HTTP try (tokentrail works
    them out once per call, ``trace_headers_function``): our LLM span's traceparent and the
    owner's baggage, on the retried try as on the first, and a new call gets its own."""
    overloaded = fake.error(529, "overloaded_error")
    overloaded.headers["retry-after-ms"] = "5"
    server.enqueue(overloaded, FakeResponse(json=fake.message()), FakeResponse(json=fake.message()))
    native = anthropic.Anthropic(base_url=server.url, api_key="test-key", max_retries=2,
                                 open_telemetry={"tracer_provider": pipeline.tracer_provider})
    with tokentrail.attribute(tenant="acme", feature="summarize"):
        native.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    with tokentrail.attribute(tenant="globex"):
        native.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    first, second = sorted(pipeline.llm_spans(), key=lambda s: s.start_time)
    tries = [r.headers for r in server.requests]
    assert len(tries) == 3
    for headers, span in zip(tries, (first, first, second)):
        trace_id, span_id = (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
        assert headers["traceparent"].startswith(f"00-{trace_id}-{span_id}-")
    assert tries[0]["baggage"] == tries[1]["baggage"]
    assert "tokentrail.tenant=acme" in tries[0]["baggage"] and "tokentrail.feature=summarize" in tries[0]["baggage"]
    assert "tokentrail.tenant=globex" in tries[2]["baggage"] and "feature" not in tries[2]["baggage"]


def test_native_spans_are_priced_when_our_instrumentor_is_off(server):
    server.reset()
    with InMemoryPipeline(instrument=False) as pipe:
        native = client(server, open_telemetry={"tracer_provider": pipe.tracer_provider})
        with tokentrail.attribute(tenant="acme"):
            native.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        [span] = [s for s in pipe.spans() if s.name == "anthropic.messages.create"]
        assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"
        assert span.attributes[attr.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(0.042)


# --- Message Batches -----------------------------------------------------------------------------
def test_batch_results_priced_at_batch_tier_when_read_once(server, pipeline):
    c = client(server)
    requests = [{"custom_id": f"r{i}", "params": {"model": MODEL, "max_tokens": 100, "messages": MESSAGES}}
                for i in range(3)]
    batch = c.messages.batches.create(requests=requests)
    with tokentrail.attribute(tenant="acme"):
        results = list(c.messages.batches.results(batch.id))
        again = list(c.messages.batches.results(batch.id))  # re-reading is not re-billing
    assert [r.custom_id for r in results] == ["r0", "r1", "r2"] == [r.custom_id for r in again]
    spans = pipeline.llm_spans()
    priced = [s for s in spans if attr.GEN_AI_USAGE_COST_AMOUNT in s.attributes]
    assert len(priced) == 3
    for span in priced:
        assert span.attributes[attr.TOKENTRAIL_PRICING_TIER].startswith("batch")
        assert usd(span) == Decimal("0.021")  # half of $0.042
        assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"


def test_state_reset_forgets_the_batch_results_already_priced(server, pipeline):
    from tokentrail import state

    c = client(server)
    batch = c.messages.batches.create(requests=[
        {"custom_id": "r0", "params": {"model": MODEL, "max_tokens": 100, "messages": MESSAGES}}])
    list(c.messages.batches.results(batch.id))
    state.reset()  # a fresh start: the same result read again is priced again
    list(c.messages.batches.results(batch.id))
    priced = [s for s in pipeline.llm_spans() if attr.GEN_AI_USAGE_COST_AMOUNT in s.attributes]
    assert [usd(span) for span in priced] == [Decimal("0.021")] * 2


def test_uninstrument_restores_the_sdk(server):
    server.reset()
    inst = AnthropicInstrumentor()
    with InMemoryPipeline(instrument=[inst]) as pipe:
        pass
    client(server).messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert pipe.exporter.get_finished_spans() == ()


# --- metrics, pre-flight, living beside the Bedrock instrumentor ----------------------------------
def test_cost_metric_per_tenant(server, pipeline):
    from tokentrail.semconv import metrics as names

    with tokentrail.attribute(tenant="acme"):
        client(server).messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert pipeline.metric_sum(names.TOKENTRAIL_COST, tenant="acme") == pytest.approx(0.042)


def test_preflight_stop_sends_nothing(server, pipeline):
    from tokentrail import preflight

    planned = []

    def stop(call):
        planned.append(call)
        raise tokentrail.BudgetExceeded("budget_usd", limit=1.0, spent=1.0)

    preflight.register(stop)
    try:
        with pytest.raises(tokentrail.BudgetExceeded):
            client(server).messages.create(model=MODEL, max_tokens=77, messages=MESSAGES)
    finally:
        preflight._checks.remove(stop)
    assert server.requests == []
    assert planned[0].provider == "anthropic" and planned[0].max_output_tokens == 77
    assert planned[0].estimated_input_tokens > 0
    assert only_llm_span(pipeline).attributes[attr.ERROR_TYPE] == "BudgetExceeded"


def test_anthropic_bedrock_client_beside_the_boto3_instrumentor_is_one_span(server):
    from tokentrail.instrumentation.bedrock import BedrockInstrumentor

    server.reset()
    with InMemoryPipeline(instrument=[AnthropicInstrumentor(), BedrockInstrumentor()]) as pipe:
        bedrock_client(server).messages.create(model="us.anthropic.claude-sonnet-4-20250514-v1:0",
                                               max_tokens=10, messages=MESSAGES)
        [span] = pipe.llm_spans()
    assert span.attributes[attr.GEN_AI_PROVIDER_NAME] == "aws.bedrock"


def test_structured_parse_is_priced(server, pipeline):
    import pydantic

    class City(pydantic.BaseModel):
        city: str

    server.enqueue(FakeResponse(json=fake.message(content=[fake.text_block('{"city": "Paris"}')])))
    parsed = client(server).messages.parse(model=MODEL, max_tokens=100, messages=MESSAGES, output_format=City)
    assert parsed.parsed_output == City(city="Paris")
    assert usd(only_llm_span(pipeline)) == Decimal("0.042")


def test_with_streaming_response_is_priced_when_parsed(server, pipeline):
    c = client(server)
    with c.messages.with_streaming_response.create(model=MODEL, max_tokens=10, messages=MESSAGES) as response:
        assert response.parse().usage.output_tokens == 1200
    server.enqueue(FakeResponse(sse=fake.message_events()))
    with c.messages.with_streaming_response.create(model=MODEL, max_tokens=10, messages=MESSAGES,
                                                   stream=True) as response:
        stream = response.parse()
        assert isinstance(stream, anthropic.Stream)
        for _ in stream:
            pass
    server.enqueue(FakeResponse(sse=fake.message_events()))
    raw = c.messages.with_raw_response.create(model=MODEL, max_tokens=10, messages=MESSAGES, stream=True)
    for _ in raw.parse():
        pass
    spans = pipeline.llm_spans()
    assert len(spans) == 3 and all(usd(s) == Decimal("0.042") for s in spans)


def test_raw_response_never_parsed_ends_its_span_once(server, pipeline):
    with client(server).messages.with_streaming_response.create(model=MODEL, max_tokens=10,
                                                                messages=MESSAGES) as response:
        response.read()
    del response
    gc.collect()
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


# --- living with other Anthropic instrumentations ------------------------------------------------
def _three_calls(server):
    c = client(server)
    with tokentrail.attribute(tenant="acme"):
        c.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        for _ in c.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, stream=True):
            pass
        with c.messages.stream(model=MODEL, max_tokens=10, messages=MESSAGES) as stream:
            stream.get_final_message()


# OpenLLMetry's and the official OpenTelemetry GenAI Anthropic instrumentations
OTHERS = ["opentelemetry.instrumentation.anthropic", "opentelemetry.instrumentation.genai.anthropic"]


@pytest.mark.parametrize("ours_first", [False, True])
@pytest.mark.parametrize("other", OTHERS)
def test_other_instrumentation_beside_ours_one_llm_span_per_call(server, other, ours_first):
    theirs = importlib.import_module(other)
    server.reset()
    both = [theirs.AnthropicInstrumentor(), AnthropicInstrumentor()]
    with InMemoryPipeline(instrument=both[::-1] if ours_first else both) as pipe:
        _three_calls(server)
        spans = pipe.llm_spans()
    assert [s.instrumentation_scope.name for s in spans] == ["tokentrail.instrumentation.anthropic"] * 3
    assert all(usd(s) == Decimal("0.042") and s.attributes[attr.TOKENTRAIL_TENANT] == "acme" for s in spans)


@pytest.mark.parametrize("other", OTHERS)
def test_other_instrumentation_alone_gets_owner_and_cost(server, other):
    theirs = importlib.import_module(other)
    server.reset()
    with InMemoryPipeline(instrument=[theirs.AnthropicInstrumentor()]) as pipe:
        _three_calls(server)
        spans = pipe.llm_spans()
    assert len(spans) == 3
    for span in spans:
        assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"
        assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "priced"
        assert span.attributes[attr.GEN_AI_USAGE_COST_AMOUNT] > 0


def test_async_caller_sees_exactly_what_the_sdk_returns(server):
    async def results():
        async with aclient(server) as c:
            server.enqueue(FakeResponse(json=fake.message(message_id="msg_same")))
            message = await c.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
            server.enqueue(FakeResponse(sse=fake.message_events(message_id="msg_same")))
            stream = await c.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, stream=True)
            kind = isinstance(stream, anthropic.AsyncStream)
            events = [e.model_dump() async for e in stream]
            return message.model_dump(), kind, events

    server.reset()
    plain = asyncio.run(results())
    with InMemoryPipeline(instrument=[AnthropicInstrumentor()]) as pipe:
        traced = asyncio.run(results())
        assert len(pipe.llm_spans()) == 2
    assert traced == plain and traced[1]


@pytest.mark.parametrize("name", ["cache_hit", "cache_write", "long_context"])
@pytest.mark.parametrize("which", ["bedrock", "vertex"])
def test_cloud_clients_async_and_cache_fixtures(server, pipeline, which, name):
    model = {"bedrock": "eu.anthropic.claude-sonnet-4-20250514-v1:0", "vertex": "claude-sonnet-4@20250514"}[which]

    async def run():
        if which == "bedrock":
            c = anthropic.AsyncAnthropicBedrock(aws_access_key="AKIDTEST", aws_secret_key="secret",
                                                aws_region="eu-west-1", base_url=server.url, max_retries=0)
        else:
            c = anthropic.AsyncAnthropicVertex(region="europe-west1", project_id="p", access_token="token",
                                               base_url=f"{server.url}/v1", max_retries=0)
        async with c:
            await c.messages.create(model=model, max_tokens=1024, messages=MESSAGES)
            async with c.messages.stream(model=model, max_tokens=1024, messages=MESSAGES) as stream:
                await stream.get_final_message()

    enqueue(server, name, stream=False)
    if which == "bedrock":  # AnthropicBedrock streams arrive in Bedrock's binary event stream
        usage, content, _ = FIXTURES[name]
        frames = [bedrock_api.chunk_frame(data) for event, data in fake.message_events(usage=usage, message_id="m")
                  if event != "ping"]
        server.enqueue(FakeResponse(body=iter(frames), content_type=bedrock_api.EVENTSTREAM))
    else:
        enqueue(server, name, stream=True)
    asyncio.run(run())
    spans = pipeline.llm_spans()
    assert len(spans) == 2
    assert [check_invariants(s) for s in spans][0] == check_invariants(spans[1])
    assert all(usd(s) == Decimal(FIXTURES[name][2]) for s in spans)


def test_async_batch_results_priced_at_batch_tier(server, pipeline):
    async def run():
        async with aclient(server) as c:
            batch = await c.messages.batches.create(requests=[
                {"custom_id": "only", "params": {"model": MODEL, "max_tokens": 100, "messages": MESSAGES}}])
            return [r.custom_id async for r in await c.messages.batches.results(batch.id)]

    assert asyncio.run(run()) == ["only"]
    [span] = [s for s in pipeline.llm_spans() if attr.GEN_AI_USAGE_COST_AMOUNT in s.attributes]
    assert usd(span) == Decimal("0.021")


def test_async_streaming_response_is_priced_when_parsed(server, pipeline):
    async def run():
        async with aclient(server) as c:
            async with c.messages.with_streaming_response.create(model=MODEL, max_tokens=10,
                                                                 messages=MESSAGES) as response:
                assert (await response.parse()).usage.output_tokens == 1200
            server.enqueue(FakeResponse(sse=fake.message_events()))
            async with c.messages.with_streaming_response.create(model=MODEL, max_tokens=10, messages=MESSAGES,
                                                                 stream=True) as response:
                stream = await response.parse()
                assert isinstance(stream, anthropic.AsyncStream)
                async for _ in stream:
                    pass

    asyncio.run(run())
    spans = pipeline.llm_spans()
    assert len(spans) == 2 and all(usd(s) == Decimal("0.042") for s in spans)


def test_tool_runner_loop_prices_each_call_once_under_the_native_agent_span(server, pipeline):
    from anthropic import beta_tool
    from tokentrail.semconv import metrics as names

    @beta_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    native = client(server, open_telemetry={"tracer_provider": pipeline.tracer_provider})
    server.enqueue(FakeResponse(json=fake.message(content=[fake.tool_use_block("get_weather", {"city": "Paris"})],
                                                  stop_reason="tool_use")))
    with tokentrail.attribute(tenant="acme"):
        for _ in native.beta.messages.tool_runner(model=MODEL, max_tokens=100, tools=[get_weather],
                                                  messages=MESSAGES):
            pass
    spans = {s.name: s for s in pipeline.spans()}
    agent = spans["anthropic.messages.tool_runner"]
    calls = [s for s in pipeline.spans() if attr.GEN_AI_USAGE_COST_AMOUNT in s.attributes]
    assert len(calls) == 2 and all(s.parent.span_id == agent.context.span_id for s in calls)
    assert attr.GEN_AI_USAGE_COST_AMOUNT not in agent.attributes
    assert pipeline.metric_sum(names.TOKENTRAIL_COST, tenant="acme") == pytest.approx(0.084)


def test_sdk_internal_retries_are_counted_outside_a_task_too(pipeline, server):
    # The SDK's own telemetry gets a stand-in span carrying ours (so it keeps traceparent on the
    # wire); its retry loop must still find our LLM span to count the failed try.
    overloaded = fake.error(529, "overloaded_error")
    overloaded.headers["retry-after-ms"] = "5"  # keep the SDK's backoff short
    server.enqueue(overloaded, FakeResponse(json=fake.message(usage=fake.usage_block(8000, 1200))))
    anthropic.Anthropic(base_url=server.url, api_key="test-key", max_retries=2).messages.create(
        model="claude-sonnet-4-20250514", max_tokens=2000, messages=[{"role": "user", "content": "Hello"}])
    span = only_llm_span(pipeline)
    assert len(server.requests) == 2
    assert span.attributes[attr.TOKENTRAIL_RETRY_ATTEMPT] == 1
    assert usd(span) == Decimal("0.042")
