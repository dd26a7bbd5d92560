"""Never hurt the app: malformed or missing usage becomes no_usage, and the caller's result is
exactly what an uninstrumented call returns; the SDK's types and exceptions are unchanged."""

from __future__ import annotations

import openai
import pytest

from tokentrail.instrumentation.openai import OpenAIInstrumentor
from tokentrail.instrumentation.openai import usage as openai_usage
from tokentrail.processor.usage import InvalidUsage, Usage
from tokentrail.semconv import attributes as attr
from tokentrail.testing import openai_api

from helpers import only_llm_span, user_message

# model_dump() of deliberately malformed usage makes pydantic warn; that is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")

MALFORMED = {
    "strings": {"prompt_tokens": "many", "completion_tokens": "few", "total_tokens": "lots"},
    "negative": {"prompt_tokens": -5, "completion_tokens": 500, "total_tokens": 495},
    "missing_prompt": {"completion_tokens": 500, "total_tokens": 500},
    "cached_exceeds_prompt": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                              "prompt_tokens_details": {"cached_tokens": 50}},
    "reasoning_exceeds_output": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                                 "completion_tokens_details": {"reasoning_tokens": 9}},
    "details_wrong_type": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                           "prompt_tokens_details": "cached"},
    "not_an_object": "lots",
}
# The SDK itself coerces these for the caller (to 2000 and 1): not malformed by the time we see them.
SDK_COERCED = {"prompt_tokens": "2000", "completion_tokens": True, "total_tokens": "2001"}


def _baseline(pipeline, server, call):
    """The result of ``call(client)`` with the instrumentation off (same scripted reply)."""
    instrumentor = OpenAIInstrumentor()
    instrumentor.uninstrument()
    try:
        with openai.OpenAI(base_url=openai_api.base_url(server), api_key="sk-test", max_retries=0) as c:
            return call(c)
    finally:
        instrumentor.instrument(tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_chat_usage_is_no_usage_and_result_unchanged(pipeline, client, server, case):
    def call(c):
        server.enqueue(openai_api.reply(usage=MALFORMED[case]))
        return c.chat.completions.create(model="gpt-4o", messages=user_message())

    expected = _baseline(pipeline, server, call)
    result = call(client)

    assert type(result) is type(expected)
    assert result.model_dump() == expected.model_dump()
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"
    assert attr.GEN_AI_USAGE_INPUT_TOKENS not in span.attributes
    assert attr.GEN_AI_USAGE_COST_AMOUNT not in span.attributes


def test_usage_the_sdk_coerces_is_recorded_as_the_caller_sees_it(pipeline, client, server):
    server.enqueue(openai_api.reply(usage=SDK_COERCED))
    result = client.chat.completions.create(model="gpt-4o", messages=user_message())
    span = only_llm_span(pipeline)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (2000, 1)
    assert (span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS], span.attributes[attr.GEN_AI_USAGE_OUTPUT_TOKENS]) == (2000, 1)


@pytest.mark.parametrize("case", ["strings", "negative", "not_an_object"])
def test_malformed_streamed_usage(pipeline, client, server, case):
    server.enqueue(openai_api.reply(usage=MALFORMED[case]))
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True))
    assert chunks and all(c.choices for c in chunks)
    assert only_llm_span(pipeline).attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


@pytest.mark.parametrize("case", [{"input_tokens": "x", "output_tokens": 1}, {"output_tokens": 4}, [1, 2]])
def test_malformed_responses_usage(pipeline, client, server, case):
    def call(c):
        server.enqueue(openai_api.reply(usage=case))
        return c.responses.create(model="gpt-4o", input="hi")

    expected = _baseline(pipeline, server, call)
    assert call(client).model_dump() == expected.model_dump()
    assert only_llm_span(pipeline).attributes[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


def test_missing_usage_is_no_usage(pipeline, client, server):
    server.enqueue(openai_api.reply(omit_usage=True), openai_api.reply(omit_usage=True))
    result = client.chat.completions.create(model="gpt-4o", messages=user_message())
    client.embeddings.create(model="text-embedding-3-small", input="x")
    assert result.usage is None
    assert [s.attributes[attr.TOKENTRAIL_COST_STATUS] for s in pipeline.llm_spans()] == ["no_usage"] * 2


def test_unknown_model_is_unpriced_never_zero(pipeline, client, server):
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500))
    client.chat.completions.create(model="my-private-finetune-xyz", messages=user_message())
    span = only_llm_span(pipeline)
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "unpriced"
    assert attr.GEN_AI_USAGE_COST_AMOUNT not in span.attributes
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 2000


def test_return_types_are_the_sdks(pipeline, client, server):
    assert type(client.chat.completions.create(model="gpt-4o", messages=user_message())) is (
        openai.types.chat.ChatCompletion
    )
    assert type(client.responses.create(model="gpt-4o", input="x")) is openai.types.responses.Response
    assert type(client.embeddings.create(model="text-embedding-3-small", input="x")) is (
        openai.types.CreateEmbeddingResponse
    )
    stream = client.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True)
    assert isinstance(stream, openai.Stream) and stream.response.status_code == 200
    stream.close()


def test_sdk_exception_is_the_very_same_object_the_sdk_raised(pipeline, client, server):
    server.enqueue(openai_api.error(404, message="The model `nope` does not exist", code="model_not_found"))
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=user_message())
    assert caught.value.code == "model_not_found"
    assert caught.value.request_id == "req_fake_error"
    # the traceback ends in the SDK, not in a re-raise of ours
    assert "openai" in str(caught.traceback[-1].path)


def test_sdk_argument_errors_pass_through(pipeline, client):
    with pytest.raises(TypeError):
        client.chat.completions.create(model="gpt-4o")  # messages missing: the SDK's own TypeError


def test_unexpected_arguments_do_not_break_planning(pipeline, client, server):
    # odd but SDK-accepted values: messages as a generator, content parts, NOT_GIVEN max tokens
    messages = ({"role": "user", "content": [{"type": "text", "text": "hi"}]} for _ in range(2))
    result = client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=openai.NOT_GIVEN)
    assert result.choices[0].message.content
    assert len(server.requests[-1].json["messages"]) == 2  # the generator was not used up by us
    assert only_llm_span(pipeline).attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 20


# --- pure usage extraction -----------------------------------------------------------------
def test_chat_usage_extraction():
    raw = {"prompt_tokens": 10_000, "completion_tokens": 1_200, "total_tokens": 11_200,
           "prompt_tokens_details": {"cached_tokens": 2_000, "cache_write_tokens": 500},
           "completion_tokens_details": {"reasoning_tokens": 300}}
    assert openai_usage.chat_usage(raw) == Usage(
        input_tokens=10_000, output_tokens=1_200, cache_read_tokens=2_000, cache_write_tokens=500, reasoning_tokens=300
    )


def test_deepseek_cache_hit_and_miss():
    raw = {"prompt_tokens": 1_000, "completion_tokens": 50, "total_tokens": 1_050,
           "prompt_cache_hit_tokens": 800, "prompt_cache_miss_tokens": 200}
    assert openai_usage.chat_usage(raw) == Usage(input_tokens=1_000, output_tokens=50, cache_read_tokens=800)
    no_total = {"completion_tokens": 50, "prompt_cache_hit_tokens": 800, "prompt_cache_miss_tokens": 200}
    assert openai_usage.chat_usage(no_total).input_tokens == 1_000


def test_responses_usage_extraction():
    response = {"usage": {"input_tokens": 900, "output_tokens": 100,
                          "input_tokens_details": {"cached_tokens": 300, "cache_write_tokens": 0},
                          "output_tokens_details": {"reasoning_tokens": 40}},
                "output": [{"type": "web_search_call"}, {"type": "message"}]}
    assert openai_usage.responses_usage(response) == Usage(
        input_tokens=900, output_tokens=100, cache_read_tokens=300, reasoning_tokens=40, tool_calls={"web_search": 1}
    )


@pytest.mark.parametrize("raw", list(MALFORMED.values()) + [{}, SDK_COERCED, {"prompt_tokens": 1.5, "completion_tokens": 1}])
def test_malformed_usage_is_rejected(raw):
    with pytest.raises(InvalidUsage):
        openai_usage.chat_usage(raw)


def test_absent_usage_is_none():
    assert openai_usage.chat_usage(None) is None
    assert openai_usage.responses_usage({"id": "resp_1"}) is None


def test_malformed_stream_chunks_reach_the_caller_untouched(pipeline, client, server):
    good = openai_api.chat_chunks(openai_api.Reply(), "gpt-4o", include_usage=True)
    odd = {"id": "chatcmpl-odd", "object": "chat.completion.chunk"}  # no choices, no model
    from tokentrail.testing import FakeResponse

    server.enqueue(FakeResponse(sse=[(None, good[0]), (None, odd), *[(None, c) for c in good[1:]], (None, "[DONE]")]))
    seen = list(client.chat.completions.create(model="gpt-4o", messages=user_message(), stream=True))

    assert len(seen) == len(good)  # every chunk but our hidden usage chunk, the odd one included
    assert seen[1].id == "chatcmpl-odd"
    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 20
