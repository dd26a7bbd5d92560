"""Billed calls the openai SDK turns into exceptions: ``chat.completions.parse`` (and the
``chat.completions.stream`` helper) with a ``response_format`` raise ``LengthFinishReasonError`` /
``ContentFilterFinishReasonError`` on a 200 whose answer was cut, with its ``usage``: the
provider billed it, so the span keeps ``error.type`` and gets the usage and the cost. The
Responses API returns such an answer (status ``incomplete``) instead of raising: priced too."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal

import openai
import pydantic
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from pydantic import BaseModel

import tokentrail
from tokentrail.ledger import LedgerSpanExporter
from tokentrail.semconv import attributes as attr
from tokentrail.testing import openai_api

from helpers import only_llm_span, user_message

# gpt-4o list price, USD per million tokens
INPUT_USD, OUTPUT_USD = Decimal("2.50"), Decimal("10.00")
PROMPT, COMPLETION = 1_200, 300
CUT = {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "finish_reason": "length",
       "content": '{"city": "Par'}
INCOMPLETE = {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "incomplete_reason": "max_output_tokens",
              "content": '{"city": "Par'}


def nano_usd(prompt: int, completion: int) -> int:
    usd = (prompt * INPUT_USD + completion * OUTPUT_USD) / 1_000_000
    return int(usd * 10**9)


class Answer(BaseModel):
    city: str
    temperature_c: int


def scripted(**reply) -> dict:
    return {openai_api.HEADER: json.dumps(reply)}


def assert_billed(span, error: str, prompt: int = PROMPT, completion: int = COMPLETION) -> None:
    a = span.attributes
    assert a[attr.ERROR_TYPE] == error
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == prompt
    assert a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == completion
    assert a[attr.TOKENTRAIL_COST_NANO_USD] == nano_usd(prompt, completion)
    assert a[attr.TOKENTRAIL_COST_STATUS] != "no_usage"
    assert a[attr.TOKENTRAIL_TENANT] == "acme"


def ledger_row(tmp_path, pipeline, span) -> tuple:
    path = str(tmp_path / "ledger.db")
    assert LedgerSpanExporter(path).export(pipeline.spans()).name == "SUCCESS"
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT cost_nano, tenant, error_type, input_tokens, output_tokens, trace_id FROM spans WHERE span_id = ?",
            (format(span.context.span_id, "016x"),),
        ).fetchone()


def test_parse_cut_at_max_tokens_is_priced_and_the_error_reaches_the_caller(pipeline, client, tmp_path):
    with tokentrail.attribute(tenant="acme", feature="extract"):
        with pytest.raises(openai.LengthFinishReasonError) as raised:
            client.chat.completions.parse(model="gpt-4o", messages=user_message(), response_format=Answer,
                                          max_tokens=COMPLETION, extra_headers=scripted(**CUT))

    completion = raised.value.completion  # the SDK's own exception, its completion intact
    assert type(raised.value) is openai.LengthFinishReasonError
    assert completion.usage.prompt_tokens == PROMPT and completion.usage.completion_tokens == COMPLETION
    assert completion.choices[0].finish_reason == "length"
    span = only_llm_span(pipeline)
    assert_billed(span, "LengthFinishReasonError")
    assert tuple(span.attributes[attr.GEN_AI_RESPONSE_FINISH_REASONS]) == ("length",)
    assert span.attributes[attr.GEN_AI_RESPONSE_ID] == completion.id
    # 1,200 in / 300 out at $2.50 / $10.00 per M: $0.003 + $0.003
    assert nano_usd(PROMPT, COMPLETION) == 6_000_000
    assert ledger_row(tmp_path, pipeline, span) == (
        6_000_000, "acme", "LengthFinishReasonError", PROMPT, COMPLETION, format(span.context.trace_id, "032x"))


def test_parse_stopped_by_the_content_filter_is_priced(pipeline, client):
    with tokentrail.attribute(tenant="acme"):
        with pytest.raises(openai.ContentFilterFinishReasonError) as raised:
            client.chat.completions.parse(model="gpt-4o", messages=user_message(), response_format=Answer,
                                          extra_headers=scripted(prompt_tokens=900, completion_tokens=40,
                                                                 finish_reason="content_filter"))

    assert raised.value.completion.usage.completion_tokens == 40
    assert_billed(only_llm_span(pipeline), "ContentFilterFinishReasonError", 900, 40)


async def test_async_parse_cut_at_max_tokens_is_priced(pipeline, aclient, tmp_path):
    with tokentrail.attribute(tenant="acme"):
        with pytest.raises(openai.LengthFinishReasonError) as raised:
            await aclient.chat.completions.parse(model="gpt-4o", messages=user_message(), response_format=Answer,
                                                 max_tokens=COMPLETION, extra_headers=scripted(**CUT))

    assert raised.value.completion.usage.completion_tokens == COMPLETION
    span = only_llm_span(pipeline)
    assert_billed(span, "LengthFinishReasonError")
    assert ledger_row(tmp_path, pipeline, span)[:3] == (6_000_000, "acme", "LengthFinishReasonError")


def test_uninstrumented_parse_raises_the_same(pipeline, client):
    """Our wrapper changes nothing the caller sees: with instrumentation suppressed, same error."""
    with suppress_instrumentation(), pytest.raises(openai.LengthFinishReasonError) as raised:
        client.chat.completions.parse(model="gpt-4o", messages=user_message(), response_format=Answer,
                                      extra_headers=scripted(**CUT))
    assert raised.value.completion.usage.prompt_tokens == PROMPT
    assert pipeline.llm_spans() == []


def test_stream_helper_cut_at_max_tokens_is_priced(pipeline, client, tmp_path):
    events = []
    with tokentrail.attribute(tenant="acme"):
        with pytest.raises(openai.LengthFinishReasonError) as raised:
            with client.chat.completions.stream(model="gpt-4o", messages=user_message(), response_format=Answer,
                                                max_tokens=COMPLETION, extra_headers=scripted(**CUT)) as stream:
                for event in stream:
                    events.append(event.type)

    assert "content.delta" in events  # the caller saw the answer up to the cut
    assert raised.value.completion.choices[0].finish_reason == "length"
    span = only_llm_span(pipeline)
    assert_billed(span, "LengthFinishReasonError")
    assert ledger_row(tmp_path, pipeline, span)[:3] == (6_000_000, "acme", "LengthFinishReasonError")


async def test_async_stream_helper_cut_at_max_tokens_is_priced(pipeline, aclient):
    with tokentrail.attribute(tenant="acme"):
        with pytest.raises(openai.LengthFinishReasonError):
            async with aclient.chat.completions.stream(model="gpt-4o", messages=user_message(),
                                                       response_format=Answer, max_tokens=COMPLETION,
                                                       extra_headers=scripted(**CUT)) as stream:
                async for _ in stream:
                    pass

    assert_billed(only_llm_span(pipeline), "LengthFinishReasonError")


def test_stream_helper_read_to_the_end_is_priced(pipeline, client):
    """Without a format the helper streams the cut answer to its end (usage chunk included) and
    raises only from get_final_completion, when the call is already priced."""
    with tokentrail.attribute(tenant="acme"):
        with client.chat.completions.stream(model="gpt-4o", messages=user_message(), max_tokens=COMPLETION,
                                            extra_headers=scripted(**CUT)) as stream:
            for _ in stream:
                pass
            with pytest.raises(openai.LengthFinishReasonError):
                stream.get_final_completion()

    a = only_llm_span(pipeline).attributes
    assert a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == COMPLETION
    assert a[attr.TOKENTRAIL_COST_NANO_USD] == 6_000_000


def test_responses_parse_cut_at_max_output_tokens_is_priced(pipeline, client, tmp_path):
    """The Responses API answers status incomplete; the SDK's text_format then fails on the cut JSON."""
    with tokentrail.attribute(tenant="acme"):
        with pytest.raises(pydantic.ValidationError):
            client.responses.parse(model="gpt-4o", input="Weather in Paris?", text_format=Answer,
                                   max_output_tokens=COMPLETION, extra_headers=scripted(**INCOMPLETE))

    span = only_llm_span(pipeline)
    assert_billed(span, "ValidationError")
    assert tuple(span.attributes[attr.GEN_AI_RESPONSE_FINISH_REASONS]) == ("incomplete",)
    assert ledger_row(tmp_path, pipeline, span)[:3] == (6_000_000, "acme", "ValidationError")


async def test_async_responses_parse_cut_at_max_output_tokens_is_priced(pipeline, aclient):
    with tokentrail.attribute(tenant="acme"):
        with pytest.raises(pydantic.ValidationError):
            await aclient.responses.parse(model="gpt-4o", input="Weather in Paris?", text_format=Answer,
                                          max_output_tokens=COMPLETION, extra_headers=scripted(**INCOMPLETE))

    assert_billed(only_llm_span(pipeline), "ValidationError")


def test_responses_incomplete_without_a_format_is_priced_and_not_an_error(pipeline, client):
    with tokentrail.attribute(tenant="acme"):
        response = client.responses.parse(model="gpt-4o", input="Weather in Paris?", max_output_tokens=COMPLETION,
                                          extra_headers=scripted(**INCOMPLETE))

    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    a = only_llm_span(pipeline).attributes
    assert attr.ERROR_TYPE not in a
    assert a[attr.TOKENTRAIL_COST_NANO_USD] == nano_usd(PROMPT, COMPLETION)
    assert tuple(a[attr.GEN_AI_RESPONSE_FINISH_REASONS]) == ("incomplete",)


def test_responses_stream_cut_at_max_output_tokens_is_priced(pipeline, client):
    """The stream helper parses the terminal response.incomplete and raises: the call is priced."""
    with tokentrail.attribute(tenant="acme"):
        with pytest.raises(pydantic.ValidationError):
            with client.responses.stream(model="gpt-4o", input="Weather in Paris?", text_format=Answer,
                                         max_output_tokens=COMPLETION, extra_headers=scripted(**INCOMPLETE)) as stream:
                for _ in stream:
                    pass

    span = only_llm_span(pipeline)
    assert_billed(span, "ValidationError")
    assert tuple(span.attributes[attr.GEN_AI_RESPONSE_FINISH_REASONS]) == ("incomplete",)


async def test_async_responses_stream_cut_at_max_output_tokens_is_priced(pipeline, aclient):
    with tokentrail.attribute(tenant="acme"):
        with pytest.raises(pydantic.ValidationError):
            async with aclient.responses.stream(model="gpt-4o", input="Weather in Paris?", text_format=Answer,
                                                max_output_tokens=COMPLETION,
                                                extra_headers=scripted(**INCOMPLETE)) as stream:
                async for _ in stream:
                    pass

    assert_billed(only_llm_span(pipeline), "ValidationError")
