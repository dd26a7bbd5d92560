"""OpenAI instrumentation through the real openai SDK: spans, usage, cost, owner, errors,
raw responses, pre-flight. Streams are in test_openai_streams.py."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import openai
import pytest
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

import tokentrail
from tokentrail import preflight
from tokentrail.semconv import attributes as attr
from tokentrail.testing import openai_api

from helpers import only_llm_span, reinstrument, usd, user_message


def test_chat_completion_span_has_usage_cost_and_request_attributes(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500, model="gpt-4o-2024-08-06"))
    result = client.chat.completions.create(model="gpt-4o", messages=user_message(), max_completion_tokens=800)

    assert isinstance(result, openai.types.chat.ChatCompletion)
    span = only_llm_span(pipeline)
    a = span.attributes
    assert span.name == "chat gpt-4o"
    assert span.kind is SpanKind.CLIENT
    assert a[attr.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[attr.GEN_AI_OPERATION_NAME] == "chat"
    assert a[attr.GEN_AI_REQUEST_MODEL] == "gpt-4o"
    assert a[attr.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"
    assert a[attr.GEN_AI_RESPONSE_ID] == "chatcmpl-fake0001"
    assert tuple(a[attr.GEN_AI_RESPONSE_FINISH_REASONS]) == ("stop",)
    assert a[attr.GEN_AI_REQUEST_MAX_TOKENS] == 800
    assert attr.GEN_AI_REQUEST_STREAM not in a  # set on streaming requests only
    assert a[attr.SERVER_ADDRESS] == "127.0.0.1"
    assert a[attr.SERVER_PORT] == int(server.url.rsplit(":", 1)[1])  # upstream: with server.address
    assert a[attr.TOKENTRAIL_SERVICE_TIER] == "default"
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == 2000
    assert a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 500
    # GPT-4o at $2.50 / $10 per M: 2,000 in / 500 out -> $0.0100
    assert a[attr.TOKENTRAIL_COST_STATUS] == "priced"
    assert usd(span) == Decimal("0.0100")
    assert a[attr.GEN_AI_USAGE_COST_AMOUNT] == pytest.approx(0.01)
    assert a[attr.GEN_AI_USAGE_COST_CURRENCY] == "USD"


def test_cached_prompt_tokens_are_priced_as_cache_reads(pipeline, client, server):
    # GPT-5.4 mini ($0.75 / $0.075 cached / $4.50 per M): 10,000 in of which 2,000 cached, 1,200 out
    server.enqueue(openai_api.reply(prompt_tokens=10_000, cached_tokens=2_000, completion_tokens=1_200))
    client.chat.completions.create(model="gpt-5.4-mini", messages=user_message())

    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 10_000
    assert span.attributes[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 2_000
    assert usd(span) == Decimal("0.01155")


def test_reasoning_tokens_are_part_of_output(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500, reasoning_tokens=300))
    client.chat.completions.create(model="gpt-4o", messages=user_message())

    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 500
    assert span.attributes[attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 300
    assert usd(span) == Decimal("0.0100")  # reasoning is billed as output, never twice


async def test_async_chat_completion(pipeline, aclient, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    result = await aclient.chat.completions.create(model="gpt-4o", messages=user_message())

    assert result.usage.total_tokens == 2500
    span = only_llm_span(pipeline)
    assert usd(span) == Decimal("0.0100")


class Answer(BaseModel):
    city: str
    temperature_c: int


def test_parse_with_pydantic_format(pipeline, client, server):
    content = json.dumps({"city": "Paris", "temperature_c": 21})
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500, content=content))
    result = client.chat.completions.parse(model="gpt-4o", messages=user_message(), response_format=Answer)

    assert result.choices[0].message.parsed == Answer(city="Paris", temperature_c=21)
    span = only_llm_span(pipeline)
    assert span.name == "chat gpt-4o"
    assert usd(span) == Decimal("0.0100")


async def test_async_parse(pipeline, aclient, server):
    content = json.dumps({"city": "Oslo", "temperature_c": 3})
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500, content=content))
    result = await aclient.chat.completions.parse(model="gpt-4o", messages=user_message(), response_format=Answer)

    assert result.choices[0].message.parsed.city == "Oslo"
    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


def test_responses_create(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500, cached_tokens=0, reasoning_tokens=100))
    result = client.responses.create(model="gpt-4o", input="What changed?", max_output_tokens=700)

    assert result.output_text == "Hello from the fake provider."
    span = only_llm_span(pipeline)
    a = span.attributes
    assert span.name == "chat gpt-4o"
    assert a[attr.GEN_AI_RESPONSE_ID] == "resp_fake0001"
    assert a[attr.GEN_AI_REQUEST_MAX_TOKENS] == 700
    assert a[attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 100
    assert tuple(a[attr.GEN_AI_RESPONSE_FINISH_REASONS]) == ("completed",)
    assert usd(span) == Decimal("0.0100")


def test_responses_web_search_calls_are_recorded(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500, web_searches=2))
    client.responses.create(model="gpt-4o", input="news?", tools=[{"type": "web_search"}])

    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_USAGE_TOOL_CALLS] == "web_search=2"
    # $10 per 1,000 searches on top of the tokens: $0.0100 + $0.02
    assert span.attributes[attr.TOKENTRAIL_COST_FEES] == pytest.approx(0.02)
    assert usd(span) == Decimal("0.03")


@pytest.mark.parametrize("stream", [False, True])
def test_responses_cache_reads_and_writes(pipeline, client, server, stream):
    # GPT-5.4 mini: 10,000 in of which 2,000 cached, 1,200 out -> $0.01155 (as for chat)
    server.enqueue(openai_api.reply(prompt_tokens=10_000, cached_tokens=2_000, completion_tokens=1_200))
    result = client.responses.create(model="gpt-5.4-mini", input="hi", stream=stream)
    if stream:
        list(result)
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 2_000
    assert usd(span) == Decimal("0.01155")


def test_chat_cache_writes_are_recorded(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, cache_write_tokens=1000, completion_tokens=500))
    client.chat.completions.create(model="gpt-4o", messages=user_message())
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 1000
    assert usd(span) == Decimal("0.0100")  # OpenAI bills cache writes at the input rate


async def test_async_responses_create(pipeline, aclient, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    result = await aclient.responses.create(model="gpt-4o", input="hi")

    assert result.usage.input_tokens == 2000
    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


def test_responses_parse(pipeline, client, server):
    content = json.dumps({"city": "Rome", "temperature_c": 25})
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500, content=content))
    result = client.responses.parse(model="gpt-4o", input="weather?", text_format=Answer)

    assert result.output_parsed == Answer(city="Rome", temperature_c=25)
    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])
def test_embeddings(pipeline, client, server, encoding_format):
    server.enqueue(openai_api.reply(prompt_tokens=1_000_000))
    kwargs = {"encoding_format": encoding_format} if encoding_format else {}
    result = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], **kwargs)

    assert len(result.data) == 2
    if encoding_format == "base64":  # asked for explicitly: the SDK hands back the string
        assert len(base64.b64decode(result.data[0].embedding)) == 8 * 4
    else:
        assert len(result.data[0].embedding) == 8
    span = only_llm_span(pipeline)
    assert span.name == "embeddings text-embedding-3-small"
    assert span.attributes[attr.GEN_AI_OPERATION_NAME] == "embeddings"
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 1_000_000
    assert span.attributes[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 0
    assert usd(span) == Decimal("0.02")  # text-embedding-3-small: $0.02 per M


async def test_async_embeddings(pipeline, aclient, server):
    server.enqueue(openai_api.reply(prompt_tokens=1_000_000))
    await aclient.embeddings.create(model="text-embedding-3-small", input="hello")
    assert usd(only_llm_span(pipeline)) == Decimal("0.02")


# --- raw responses -----------------------------------------------------------------------
def test_with_raw_response_yields_one_span_with_usage(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=user_message())

    assert raw.headers["x-request-id"] == "req_fake0001"
    assert raw.parse().usage.prompt_tokens == 2000
    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


def test_with_raw_response_stream(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=user_message(), stream=True)
    chunks = list(raw.parse())

    assert all(chunk.choices for chunk in chunks)  # the injected usage chunk stays hidden
    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


async def test_async_with_raw_response(pipeline, aclient, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    raw = await aclient.responses.with_raw_response.create(model="gpt-4o", input="hi")

    assert raw.parse().usage.output_tokens == 500
    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


def test_with_streaming_response(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    with client.chat.completions.with_streaming_response.create(model="gpt-4o", messages=user_message()) as resp:
        assert resp.parse().usage.completion_tokens == 500

    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


async def test_async_with_streaming_response(pipeline, aclient, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    async with aclient.embeddings.with_streaming_response.create(model="text-embedding-3-small", input="x") as resp:
        assert (await resp.parse()).usage.prompt_tokens == 2000

    assert only_llm_span(pipeline).attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 2000


# --- errors -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "exc_type"),
    [(400, openai.BadRequestError), (401, openai.AuthenticationError), (429, openai.RateLimitError),
     (500, openai.InternalServerError)],
)
def test_http_errors_pass_through_and_mark_the_span(pipeline, client, server, status, exc_type):
    server.enqueue(openai_api.error(status))
    with pytest.raises(exc_type) as caught:
        client.chat.completions.create(model="gpt-4o", messages=user_message())

    assert caught.value.status_code == status
    assert caught.value.body["type"] == openai_api.error(status).json["error"]["type"]
    span = only_llm_span(pipeline)
    assert span.attributes[attr.ERROR_TYPE] == exc_type.__name__
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"
    assert attr.GEN_AI_USAGE_COST_AMOUNT not in span.attributes


def test_sdk_retries_then_success_is_one_priced_span(pipeline, server):
    client = openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=2)
    server.enqueue(openai_api.error(500), openai_api.error(429), openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    result = client.chat.completions.create(model="gpt-4o", messages=user_message())

    assert result.usage.total_tokens == 2500
    assert len(server.requests) == 3
    span = only_llm_span(pipeline)
    assert attr.ERROR_TYPE not in span.attributes
    assert usd(span) == Decimal("0.0100")


def test_sdk_retries_exhausted(pipeline, server):
    client = openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=1)
    server.enqueue(openai_api.error(503), openai_api.error(503))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=user_message())

    assert len(server.requests) == 2
    assert only_llm_span(pipeline).attributes[attr.ERROR_TYPE] == "InternalServerError"


def test_connection_error(pipeline):
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-test", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o", messages=user_message())
    assert only_llm_span(pipeline).attributes[attr.ERROR_TYPE] == "APIConnectionError"


# --- owner, pre-flight, content -------------------------------------------------------------
def test_owner_attributes_on_the_span(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    with tokentrail.attribute(tenant="acme", feature="summarize", user="u-42"):
        client.chat.completions.create(model="gpt-4o", messages=user_message())

    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_TENANT] == "acme"
    assert span.attributes[attr.TOKENTRAIL_FEATURE] == "summarize"


@pytest.fixture
def planned_calls():
    seen: list[preflight.PlannedCall] = []
    preflight.register(seen.append)
    yield seen
    preflight._checks.remove(seen.append)


def test_preflight_sees_a_generous_plan(pipeline, client, server, planned_calls):
    text = "x" * 3000
    client.chat.completions.create(model="gpt-4o", messages=user_message(text), max_completion_tokens=256)
    client.responses.create(model="gpt-4o", input=text, instructions="be brief", max_output_tokens=64)

    chat, responses = planned_calls
    assert chat.provider == "openai" and chat.model == "gpt-4o" and chat.operation == "chat"
    assert chat.estimated_input_tokens >= 3000 // 4  # at least a tokenizer's count
    assert chat.max_output_tokens == 256
    assert responses.estimated_input_tokens >= 3000 // 4
    assert responses.max_output_tokens == 64


def test_budget_exceeded_stops_the_call_before_it_is_sent(pipeline, client, server):
    def breaker(planned):
        # built without the constructor, whose arguments belong to the budgets module
        stop = tokentrail.BudgetExceeded.__new__(tokentrail.BudgetExceeded)
        stop.args = ("task limit reached",)
        raise stop

    preflight.register(breaker)
    try:
        with pytest.raises(tokentrail.BudgetExceeded):
            client.chat.completions.create(model="gpt-4o", messages=user_message())
    finally:
        preflight._checks.remove(breaker)

    assert server.requests == []
    span = only_llm_span(pipeline)
    assert span.attributes[attr.ERROR_TYPE] == "BudgetExceeded"
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


def test_a_broken_preflight_check_does_not_stop_the_call(pipeline, client, server):
    def broken(planned):
        raise RuntimeError("bug in a check")

    preflight.register(broken)
    try:
        result = client.chat.completions.create(model="gpt-4o", messages=user_message())
    finally:
        preflight._checks.remove(broken)
    assert result.choices[0].message.content == "Hello from the fake provider."
    assert attr.ERROR_TYPE not in only_llm_span(pipeline).attributes


def test_message_content_is_not_captured_by_default(pipeline, client, server, monkeypatch):
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    secret = "my card number is 4111-1111"
    client.chat.completions.create(model="gpt-4o", messages=user_message(secret))
    client.responses.create(model="gpt-4o", input=secret)

    for span in pipeline.spans():
        dumped = json.dumps({k: str(v) for k, v in span.attributes.items()})
        assert secret not in dumped and "Hello from the fake provider" not in dumped
        assert not any(secret in str(e.attributes) for e in span.events)


def test_spans_nest_under_the_current_span(pipeline, client, server):
    with pipeline.tracer().start_as_current_span("handler") as parent:
        client.chat.completions.create(model="gpt-4o", messages=user_message())
    span = only_llm_span(pipeline)
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.context.trace_id == parent.get_span_context().trace_id


def test_uninstrument_restores_the_sdk(server):
    from tokentrail.instrumentation.openai import OpenAIInstrumentor
    from tokentrail.testing import InMemoryPipeline

    original = openai.resources.chat.completions.Completions.create
    with InMemoryPipeline(instrument=[OpenAIInstrumentor()]):
        assert openai.resources.chat.completions.Completions.create is not original
    assert openai.resources.chat.completions.Completions.create is original


def test_message_content_is_captured_only_when_asked(pipeline, client, server, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    reinstrument(pipeline)
    client.chat.completions.create(model="gpt-4o", messages=user_message("What is 2+2?"))
    list(client.chat.completions.create(model="gpt-4o", messages=user_message("Stream it"), stream=True))
    client.responses.create(model="gpt-4o", input="Explain", instructions="be brief")

    chat, streamed, responses = pipeline.llm_spans()
    assert json.loads(chat.attributes[attr.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": "What is 2+2?"}]}
    ]
    answer = [{"role": "assistant", "parts": [{"type": "text", "content": "Hello from the fake provider."}],
               "finish_reason": "stop"}]
    assert json.loads(chat.attributes[attr.GEN_AI_OUTPUT_MESSAGES]) == answer
    assert json.loads(streamed.attributes[attr.GEN_AI_OUTPUT_MESSAGES]) == answer
    assert json.loads(responses.attributes[attr.GEN_AI_INPUT_MESSAGES])[0] == {
        "role": "system", "parts": [{"type": "text", "content": "be brief"}]
    }
    assert "Hello from the fake provider." in responses.attributes[attr.GEN_AI_OUTPUT_MESSAGES]


def test_metrics_fallback_without_the_cost_processor(server):
    """Another configurator won (no CostSpanProcessor): our span is still priced before it ends,
    and the instrumentation records the cost metrics itself, to the meter provider it was given."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tokentrail.instrumentation.openai import OpenAIInstrumentor
    from tokentrail.semconv import metrics as metric_names

    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, skip_dep_check=True)
    try:
        server.reset()
        server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
        with openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=0) as c:
            c.chat.completions.create(model="gpt-4o", messages=user_message())
    finally:
        instrumentor.uninstrument()

    [span] = exporter.get_finished_spans()
    assert usd(span) == Decimal("0.0100")
    cost_points = [
        point
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == metric_names.TOKENTRAIL_COST
        for point in m.data.data_points
    ]
    assert sum(p.count for p in cost_points) == 1
    assert sum(p.sum for p in cost_points) == pytest.approx(0.01)


def test_streaming_response_read_as_json(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    with client.chat.completions.with_streaming_response.create(model="gpt-4o", messages=user_message()) as resp:
        assert resp.json()["usage"]["prompt_tokens"] == 2000
    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


def test_streaming_response_never_read_ends_its_span(pipeline, client, server):
    with client.chat.completions.with_streaming_response.create(model="gpt-4o", messages=user_message()) as resp:
        assert resp.status_code == 200
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


def test_usage_scripted_by_request_header(pipeline, client, server):
    script = {"prompt_tokens": 10_000, "cached_tokens": 2_000, "completion_tokens": 1_200, "service_tier": "flex"}
    result = client.chat.completions.create(
        model="gpt-5.4-mini", messages=user_message(), extra_headers={openai_api.HEADER: json.dumps(script)}
    )
    assert result.usage.prompt_tokens_details.cached_tokens == 2_000
    assert result.service_tier == "flex"
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_SERVICE_TIER] == "flex"
    assert span.attributes[attr.TOKENTRAIL_PRICING_TIER].startswith("flex")
    assert usd(span) < Decimal("0.01155")  # flex is cheaper than the standard $0.01155


def test_beta_responses(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500),
                   openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    result = client.beta.responses.create(model="gpt-4o", input="hi")
    events = list(client.beta.responses.create(model="gpt-4o", input="hi", stream=True))

    assert result.usage.input_tokens == 2000 and events[-1].type == "response.completed"
    assert [usd(s) for s in pipeline.llm_spans()] == [Decimal("0.0100")] * 2


def test_legacy_text_completions(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500),
                   openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    result = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=50)
    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True))

    assert result.choices[0].text == "Hello from the fake provider."
    assert all(c.choices for c in chunks)  # the injected usage chunk is hidden here too
    plain, streamed = pipeline.llm_spans()
    assert plain.name == "text_completion gpt-3.5-turbo-instruct"
    assert plain.attributes[attr.GEN_AI_REQUEST_MAX_TOKENS] == 50
    assert streamed.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 2000
    assert usd(plain) == usd(streamed) == Decimal("0.004")  # $1.50 / $2 per M


def test_raw_response_wrappers_bound_earlier_stop_after_uninstrument(server):
    from tokentrail.instrumentation.openai import OpenAIInstrumentor
    from tokentrail.testing import InMemoryPipeline

    client = openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=0)
    with InMemoryPipeline(instrument=[OpenAIInstrumentor()]) as first:
        raw = client.chat.completions.with_raw_response  # the SDK caches this, with create bound now
        raw.create(model="gpt-4o", messages=user_message())
        assert len(first.llm_spans()) == 1
    seen: list = []
    preflight.register(seen.append)  # called by an active wrapper only
    try:
        raw.create(model="gpt-4o", messages=user_message())  # still our wrapper, now inactive
    finally:
        preflight._checks.remove(seen.append)
    assert seen == []


def test_responses_conversation_id(pipeline, client, server):
    client.responses.create(model="gpt-4o", input="hi", conversation="conv_123")
    assert only_llm_span(pipeline).attributes[attr.GEN_AI_CONVERSATION_ID] == "conv_123"
