"""Streamed OpenAI calls: the caller sees exactly the SDK's stream; the span ends exactly once
(exhausted, closed, error mid-stream, abandoned) with the usage seen so far."""

from __future__ import annotations

import gc
from decimal import Decimal

import openai
import pytest

from tokentrail.instrumentation.openai import OpenAIInstrumentor
from tokentrail.semconv import attributes as attr
from tokentrail.testing import FakeResponse, openai_api

from helpers import only_llm_span, reinstrument, usd, user_message

PRICED = {"prompt_tokens": 2000, "completion_tokens": 500}


def dumps(items):
    return [item.model_dump() for item in items]


def uninstrumented(pipeline, server, fn):
    """Run ``fn(client)`` with the SDK not instrumented, for a baseline of what the caller sees."""
    instrumentor = OpenAIInstrumentor()  # the pipeline's (instrumentors are singletons)
    instrumentor.uninstrument()
    try:
        with openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=0) as c:
            return fn(c)
    finally:
        instrumentor.instrument(tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider)


def test_stream_injects_usage_and_hides_the_usage_chunk(pipeline, client, server):
    server.enqueue(openai_api.reply(**PRICED))
    stream = client.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True)
    assert isinstance(stream, openai.Stream)
    chunks = list(stream)

    assert server.requests[-1].json["stream_options"] == {"include_usage": True}
    assert chunks and all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from the fake provider."
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_REQUEST_STREAM] is True
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 2000
    assert tuple(span.attributes[attr.GEN_AI_RESPONSE_FINISH_REASONS]) == ("stop",)
    assert usd(span) == Decimal("0.0100")


def test_caller_sees_exactly_the_uninstrumented_chunks(pipeline, client, server):
    def run(c):
        server.enqueue(openai_api.reply(**PRICED))
        return dumps(c.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True))

    baseline = uninstrumented(pipeline, server, run)
    assert pipeline.llm_spans() == []
    server.enqueue(openai_api.reply(**PRICED))
    seen = dumps(client.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True))
    # The instrumented wire carries usage: null on each chunk (include_usage was injected);
    # apart from that field, the caller's chunks are identical.
    for chunk in seen:
        assert chunk.pop("usage", None) is None
    for chunk in baseline:
        chunk.pop("usage", None)
    assert seen == baseline
    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


def test_caller_asking_for_usage_gets_the_usage_chunk(pipeline, client, server):
    server.enqueue(openai_api.reply(**PRICED))
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=user_message(), stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 2000
    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


def test_caller_refusing_usage_is_respected(pipeline, client, server):
    server.enqueue(openai_api.reply(**PRICED))
    list(client.chat.completions.create(
        model="gpt-4o", messages=user_message(), stream=True, stream_options={"include_usage": False}))
    assert server.requests[-1].json["stream_options"] == {"include_usage": False}
    assert only_llm_span(pipeline).attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


def test_injection_opt_out(pipeline, client, server, monkeypatch):
    monkeypatch.setenv("TOKENTRAIL_OPENAI_INJECT_STREAM_USAGE", "false")
    reinstrument(pipeline)
    server.enqueue(openai_api.reply(**PRICED))
    list(client.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True))

    assert "stream_options" not in server.requests[-1].json
    assert only_llm_span(pipeline).attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


def test_streamed_and_non_streamed_calls_cost_the_same(pipeline, client, server):
    usage = dict(prompt_tokens=10_000, cached_tokens=2_000, completion_tokens=1_200, reasoning_tokens=200)
    server.enqueue(openai_api.reply(**usage), openai_api.reply(**usage))
    client.chat.completions.create(model="gpt-5.4-mini", messages=user_message())
    list(client.chat.completions.create(model="gpt-5.4-mini", messages=user_message(), stream=True))

    plain, streamed = pipeline.llm_spans()
    keys = [k for k in plain.attributes if k.startswith(("gen_ai.usage", "tokentrail.cost"))]
    assert {k: plain.attributes[k] for k in keys} == {k: streamed.attributes[k] for k in keys}
    assert usd(streamed) == Decimal("0.01155")


def test_stream_as_context_manager(pipeline, client, server):
    server.enqueue(openai_api.reply(**PRICED))
    with client.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True) as stream:
        assert stream.response.status_code == 200
        for _ in stream:
            pass
    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


def test_close_early_ends_the_span_once_without_usage(pipeline, client, server):
    server.enqueue(openai_api.reply(**PRICED, chunk_count=10))
    stream = client.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True)
    next(stream)
    stream.close()
    stream.close()

    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"
    assert attr.ERROR_TYPE not in span.attributes


def test_break_after_the_final_chunk_ends_with_what_was_read(pipeline, client, server):
    # Closing reads nothing more (a stalled server must not hold close()): the usage chunk
    # still to come is not collected.
    server.enqueue(openai_api.reply(**PRICED))
    with client.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True) as stream:
        for chunk in stream:
            if chunk.choices[0].finish_reason:
                break
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"
    assert tuple(span.attributes[attr.GEN_AI_RESPONSE_FINISH_REASONS]) == ("stop",)


def test_abandoned_stream_ends_its_span(pipeline, client, server):
    server.enqueue(openai_api.reply(**PRICED, chunk_count=10))
    stream = client.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True)
    next(stream)
    next(stream)
    del stream
    gc.collect()

    assert only_llm_span(pipeline).attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


def _failing_stream():
    return openai_api.reply(fail_after=2)


def test_error_mid_stream_reaches_the_caller_and_marks_the_span(pipeline, client, server):
    server.enqueue(_failing_stream())
    stream = client.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)
    assert "server had an error" in str(caught.value)
    assert len(received) == 2

    span = only_llm_span(pipeline)
    assert span.attributes[attr.ERROR_TYPE] == "APIError"
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"
    assert span.attributes[attr.GEN_AI_RESPONSE_MODEL] == "gpt-4o"  # what was seen so far is kept


def test_chat_stream_helper(pipeline, client, server):
    server.enqueue(openai_api.reply(**PRICED))
    with client.chat.completions.stream(model="gpt-4o", messages=user_message()) as stream:
        text = "".join(e.delta for e in stream if e.type == "content.delta")
        final = stream.get_final_completion()
    assert text == "Hello from the fake provider."
    assert final.choices[0].message.content == text
    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


def test_responses_stream_events_and_helper(pipeline, client, server):
    server.enqueue(openai_api.reply(**PRICED), openai_api.reply(**PRICED))
    events = list(client.responses.create(model="gpt-4o", input="hi", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    with client.responses.stream(model="gpt-4o", input="hi") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "Hello from the fake provider."

    spans = pipeline.llm_spans()
    assert len(spans) == 2
    assert [usd(s) for s in spans] == [Decimal("0.0100")] * 2
    assert all(s.attributes[attr.GEN_AI_RESPONSE_ID] == "resp_fake0001" for s in spans)


async def test_async_stream(pipeline, aclient, server):
    server.enqueue(openai_api.reply(**PRICED))
    stream = await aclient.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True)
    assert isinstance(stream, openai.AsyncStream)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)
    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


async def test_async_stream_context_manager_and_early_close(pipeline, aclient, server):
    server.enqueue(openai_api.reply(**PRICED), openai_api.reply(**PRICED, chunk_count=10))
    async with await aclient.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True) as stream:
        async for _ in stream:
            pass
    stream = await aclient.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True)
    await stream.__anext__()
    await stream.close()

    complete, closed = pipeline.llm_spans()
    assert usd(complete) == Decimal("0.0100")
    assert closed.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


async def test_async_stream_helpers(pipeline, aclient, server):
    server.enqueue(openai_api.reply(**PRICED), openai_api.reply(**PRICED))
    async with aclient.chat.completions.stream(model="gpt-4o", messages=user_message()) as stream:
        async for _ in stream:
            pass
    async with aclient.responses.stream(model="gpt-4o", input="hi") as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert final.usage.input_tokens == 2000
    assert [usd(s) for s in pipeline.llm_spans()] == [Decimal("0.0100")] * 2


async def test_async_error_mid_stream(pipeline, aclient, server):
    server.enqueue(_failing_stream())
    stream = await aclient.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    assert only_llm_span(pipeline).attributes[attr.ERROR_TYPE] == "APIError"


async def test_async_raw_response_streams(pipeline, aclient, server):
    server.enqueue(openai_api.reply(**PRICED), openai_api.reply(**PRICED))
    raw = await aclient.chat.completions.with_raw_response.create(model="gpt-4o", messages=user_message(), stream=True)
    chunks = [c async for c in raw.parse()]
    assert chunks and all(c.choices for c in chunks)
    async with aclient.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=user_message(), stream=True
    ) as resp:
        stream = await resp.parse()
        assert isinstance(stream, openai.AsyncStream)
        assert all([c.choices async for c in stream])
    assert [usd(s) for s in pipeline.llm_spans()] == [Decimal("0.0100")] * 2


def test_streaming_response_of_a_stream(pipeline, client, server):
    server.enqueue(openai_api.reply(**PRICED))
    with client.responses.with_streaming_response.create(model="gpt-4o", input="hi", stream=True) as resp:
        events = list(resp.parse())
    assert events[-1].type == "response.completed"
    assert usd(only_llm_span(pipeline)) == Decimal("0.0100")


def test_mistral_streams_are_not_given_stream_options(pipeline, server):
    # Mistral's OpenAI-compatible streams always end with usage; nothing is injected there.
    client = openai.OpenAI(base_url=openai_api.base_url(server, "mistral"), api_key="k", max_retries=0)
    usage = {"prompt_tokens": 2000, "completion_tokens": 500, "total_tokens": 2500}
    chunks = openai_api.chat_chunks(openai_api.Reply(), "mistral-small-latest", include_usage=False)
    chunks[-1]["usage"] = usage  # usage rides on the final content chunk
    server.enqueue(FakeResponse(sse=[(None, c) for c in chunks] + [(None, "[DONE]")]))
    seen = list(client.chat.completions.create(model="mistral-small-latest", messages=user_message(), stream=True))

    assert "stream_options" not in server.requests[-1].json
    assert seen[-1].usage.prompt_tokens == 2000  # the caller's chunk is untouched
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_PROVIDER_NAME] == "mistral_ai"
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 2000
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "priced"


def test_azure_prompt_filter_chunk_is_passed_through(pipeline, server):
    client = openai.AzureOpenAI(azure_endpoint=f"{server.url}/azure", api_key="k", api_version="2024-10-21",
                                max_retries=0)
    reply = openai_api.Reply(prompt_tokens=2000, completion_tokens=500, model="gpt-4o-2024-11-20")
    chunks = openai_api.chat_chunks(reply, "gpt-4o-2024-11-20", include_usage=True)
    filter_chunk = {"id": "", "object": "", "created": 0, "model": "", "choices": [],
                    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}
    server.enqueue(FakeResponse(sse=[(None, filter_chunk)] + [(None, c) for c in chunks] + [(None, "[DONE]")]))
    seen = list(client.chat.completions.create(model="prod-deployment", messages=user_message(), stream=True))

    assert seen[0].choices == [] and seen[0].usage is None  # Azure's chunk reaches the caller
    assert all(c.choices for c in seen[1:])  # only the usage chunk we asked for is hidden
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-11-20"
    assert usd(span) == Decimal("0.0100")


async def test_async_abandoned_stream_ends_its_span(pipeline, aclient, server):
    server.enqueue(openai_api.reply(**PRICED, chunk_count=10))
    stream = await aclient.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True)
    await stream.__anext__()
    del stream
    gc.collect()
    assert only_llm_span(pipeline).attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


def test_failed_response_stream_keeps_usage_and_marks_the_error(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500, fail_after=5))
    seen = list(client.responses.create(model="gpt-4o", input="hi", stream=True))

    assert seen[-1].type == "response.failed"  # the caller sees the event, as without us
    span = only_llm_span(pipeline)
    assert span.attributes[attr.ERROR_TYPE] == "server_error"
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 2000  # billed tokens are kept
    assert usd(span) == Decimal("0.0100")
