"""Gemini usageMetadata -> normalised Usage: the parts a peer gets wrong (thoughts, tool-use prompts, caches)."""

import pytest
from google.genai import types

from tokentrail.instrumentation.google_genai import usage as gusage
from tokentrail.processor.usage import InvalidUsage, Usage
from tokentrail.testing import gemini_api


def sdk_response(name: str) -> types.GenerateContentResponse:
    body = gemini_api.response_json(gemini_api.SCENARIOS[name], "gemini-2.5-pro")
    return types.GenerateContentResponse.model_validate(
        {"candidates": body["candidates"], "usage_metadata": body["usageMetadata"], "model_version": body["modelVersion"]}
    )


def test_thoughts_are_reasoning_and_billed_as_output():
    usage = gusage.usage_from_response(sdk_response("thinking"))
    assert usage == Usage(input_tokens=1_000, output_tokens=2_000, reasoning_tokens=1_500)
    assert usage.reasoning_tokens <= usage.output_tokens


def test_cached_content_is_a_cache_read_inside_input():
    usage = gusage.usage_from_response(sdk_response("cache_hit"))
    assert (usage.input_tokens, usage.cache_read_tokens, usage.uncached_input_tokens) == (12_000, 10_000, 2_000)
    assert usage.cache_write_tokens == 0


def test_tool_use_prompt_tokens_count_as_input_and_grounding_as_one_search():
    usage = gusage.usage_from_response(sdk_response("search"))
    assert usage.input_tokens == 800 + 2_000
    assert usage.output_tokens == 400
    assert usage.tool_calls == {"web_search": 1}


def test_rest_dict_and_sdk_object_agree():
    body = gemini_api.response_json(gemini_api.SCENARIOS["thinking"], "gemini-2.5-pro")
    assert gusage.usage_from_response(body) == gusage.usage_from_response(sdk_response("thinking"))


def test_stream_running_totals_are_not_summed():
    s = gemini_api.SCENARIOS["thinking"]
    folded = gusage.GenerateStreamState()
    for chunk in gemini_api.stream_chunks(s, "gemini-2.5-pro", pieces=4):
        folded.add(chunk)
    assert folded.usage() == gusage.usage_from_response(sdk_response("thinking"))
    assert folded.reasons == ["stop"] and folded.model == "gemini-2.5-pro"


def test_absent_and_malformed_usage():
    assert gusage.usage_from_metadata(None) is None
    assert gusage.usage_from_metadata({}) is None
    with pytest.raises(InvalidUsage):
        gusage.usage_from_metadata({"promptTokenCount": "twelve"})
    with pytest.raises(InvalidUsage):
        gusage.usage_from_metadata({"promptTokenCount": 12, "candidatesTokenCount": -1})
    # proto3 JSON may send counts as strings: still the count
    assert gusage.usage_from_metadata({"promptTokenCount": "12", "candidatesTokenCount": 3}) == Usage(12, 3)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("gemini-2.5-pro", "gemini-2.5-pro"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("publishers/google/models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("google/gemini-2.5-pro", "gemini-2.5-pro"),
        (None, None),
    ],
)
def test_model_id(raw, expected):
    assert gusage.model_id(raw) == expected
