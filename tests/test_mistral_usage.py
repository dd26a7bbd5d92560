"""Mistral UsageInfo -> normalised Usage (prompt-cache hits live in an extra field)."""

import pytest
from mistralai.client import models

from tokentrail.instrumentation.mistral import usage as musage
from tokentrail.processor.usage import InvalidUsage, Usage
from tokentrail.testing import mistral_api


def test_cached_tokens_from_sdk_extra_field():
    response = models.ChatCompletionResponse.model_validate(
        mistral_api.completion_json(mistral_api.SCENARIOS["cache_hit"], "mistral-small-latest")
    )
    usage = musage.usage_from_info(response.usage)
    assert usage == Usage(input_tokens=12_000, output_tokens=300, cache_read_tokens=10_000)
    assert usage.cache_read_tokens + usage.cache_write_tokens <= usage.input_tokens


def test_plain_usage_and_stream_fold_agree():
    s = mistral_api.SCENARIOS["tool_call"]
    unary = musage.usage_from_info(models.ChatCompletionResponse.model_validate(mistral_api.completion_json(s, "m")).usage)
    folded = musage.ChatStreamState()
    for chunk in mistral_api.stream_chunks(s, "m"):
        folded.add(models.CompletionEvent.model_validate({"data": chunk}))
    assert folded.usage() == unary == Usage(input_tokens=700, output_tokens=25)
    assert folded.reasons == ["tool_calls"] and folded.response_id == "cmpl-fake1"


def test_absent_and_malformed():
    assert musage.usage_from_info(None) is None
    assert musage.usage_from_info({}) is None
    with pytest.raises(InvalidUsage):
        musage.usage_from_info({"prompt_tokens": 1.5, "completion_tokens": 1})
