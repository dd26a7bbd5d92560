"""Every provider's usage extraction on arbitrary JSON (hypothesis): never an exception other than
``InvalidUsage``, never a negative or overflowing count, ``no_usage`` for anything implausible."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokentrail.instrumentation.anthropic import usage as anthropic_usage
from tokentrail.instrumentation.bedrock import usage as bedrock_usage
from tokentrail.instrumentation.google_genai import usage as gemini_usage
from tokentrail.instrumentation.mistral import usage as mistral_usage
from tokentrail.instrumentation.openai import usage as openai_usage
from tokentrail.processor.pricing import price_span
from tokentrail.processor.usage import MAX_TOKENS_PER_CALL, InvalidUsage, Usage, implausible_count
from tokentrail.semconv import attributes as attr

#: The field names the extractors read, so generated objects often hit them.
KEYS = (
    "usage", "usage_metadata", "prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details",
    "completion_tokens_details", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "prompt_cache_hit_tokens",
    "prompt_cache_miss_tokens", "input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details",
    "tool_usage", "web_search", "num_requests", "output", "type", "web_search_call", "cache_creation",
    "cache_creation_input_tokens", "cache_read_input_tokens", "ephemeral_1h_input_tokens",
    "ephemeral_5m_input_tokens", "server_tool_use", "web_search_requests", "thinking_tokens", "inputTokens",
    "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens", "cacheDetails", "ttl", "1h",
    "inputTokenCount", "outputTokenCount", "cacheReadInputTokenCount", "cacheWriteInputTokenCount",
    "prompt_token_count", "generation_token_count", "candidates_token_count", "thoughts_token_count",
    "tool_use_prompt_token_count", "cached_content_token_count", "candidates", "grounding_metadata",
    "web_search_queries", "embeddings", "statistics", "token_count", "promptTokenCount", "candidatesTokenCount",
)

_numbers = st.one_of(
    st.integers(min_value=-10, max_value=10**6),
    st.integers(min_value=MAX_TOKENS_PER_CALL - 2, max_value=MAX_TOKENS_PER_CALL + 2),
    st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**63, 10**18, 10**19, 10**30, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 1.5, 1e19, 1e300]),
)
_scalars = st.one_of(
    st.none(), st.booleans(), _numbers,
    st.text(max_size=8), _numbers.map(str),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=6),
    ),
    max_leaves=30,
)
# also as the SDKs and raw bodies see it: through a JSON round trip (NaN/Infinity included, as json.loads takes them)
_documents = st.one_of(_json, _json.map(lambda v: json.loads(json.dumps(v))))
_headers = st.dictionaries(
    st.sampled_from([bedrock_usage._HEADER_PREFIX + k for k in
                     ("input-token-count", "output-token-count", "cache-read-input-token-count",
                      "cache-write-input-token-count")]),
    _numbers.map(str), max_size=4)

EXTRACTORS = {
    "openai chat": openai_usage.chat_usage,
    "openai responses": openai_usage.responses_usage,
    "openai embeddings": openai_usage.embeddings_usage,
    "anthropic": anthropic_usage.usage_from_anthropic,
    "bedrock converse": bedrock_usage.usage_from_converse,
    "bedrock invocation metrics": bedrock_usage.usage_from_invocation_metrics,
    "bedrock invoke": lambda doc: bedrock_usage.usage_from_invoke(doc, {}),
    "gemini metadata": gemini_usage.usage_from_metadata,
    "gemini response": gemini_usage.usage_from_response,
    "gemini embeddings": gemini_usage.embedding_usage,
    "mistral": mistral_usage.usage_from_info,
}

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_sane(usage: Usage) -> None:
    counts = (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens,
              usage.cache_write_1h_tokens, usage.reasoning_tokens, *usage.tool_calls.values())
    for n in counts:
        assert type(n) is int and 0 <= n <= MAX_TOKENS_PER_CALL
    assert usage.uncached_input_tokens >= 0 and usage.cache_write_5m_tokens >= 0
    # what the span then says reads back as the same usage, and prices without an overflow
    attributes = usage.to_attributes()
    assert Usage.from_attributes(attributes) == usage
    priced = price_span({attr.GEN_AI_OPERATION_NAME: "chat", attr.GEN_AI_PROVIDER_NAME: "openai",
                         attr.GEN_AI_REQUEST_MODEL: "gpt-4o", **attributes}, None)
    nano = priced.get(attr.TOKENTRAIL_COST_NANO_USD)
    assert nano is None or 0 <= nano < 2**63


def _extract(extractor, document):
    try:
        return extractor(document)
    except InvalidUsage:
        return None  # recorded as no_usage


@pytest.mark.parametrize("name", list(EXTRACTORS))
@_FUZZ
@given(document=_documents)
def test_usage_extraction_never_raises_and_never_overflows(name, document):
    usage = _extract(EXTRACTORS[name], document)
    if usage is not None:
        _assert_sane(usage)


@_FUZZ
@given(headers=_headers, body=_documents)
def test_bedrock_headers_and_body(headers, body):
    for usage in (_extract(bedrock_usage.usage_from_headers, headers),
                  _extract(lambda b: bedrock_usage.usage_from_invoke(b, headers), body)):
        if usage is not None:
            _assert_sane(usage)


_ATTRIBUTE_KEYS = (attr.GEN_AI_USAGE_INPUT_TOKENS, attr.GEN_AI_USAGE_OUTPUT_TOKENS,
                   attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
                   attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, attr.TOKENTRAIL_USAGE_CACHE_WRITE_1H_INPUT_TOKENS,
                   attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, attr.TOKENTRAIL_USAGE_TOOL_CALLS)


@_FUZZ
@given(attributes=st.dictionaries(st.sampled_from(_ATTRIBUTE_KEYS), _scalars, max_size=len(_ATTRIBUTE_KEYS)))
def test_foreign_span_usage_attributes(attributes):
    """Any other instrumentation's span: read as usage or rejected, and priced or no_usage."""
    usage = _extract(Usage.from_attributes, attributes)
    if usage is not None:
        _assert_sane(usage)
    priced = price_span({attr.GEN_AI_OPERATION_NAME: "chat", attr.GEN_AI_PROVIDER_NAME: "openai",
                         attr.GEN_AI_REQUEST_MODEL: "gpt-4o", **attributes}, None)
    if usage is None and (attributes.get(attr.GEN_AI_USAGE_INPUT_TOKENS) is not None
                          or attributes.get(attr.GEN_AI_USAGE_OUTPUT_TOKENS) is not None):
        assert priced[attr.TOKENTRAIL_COST_STATUS] == "no_usage"


@pytest.mark.parametrize("name, document", [
    ("openai chat", {"prompt_tokens": 10**19, "completion_tokens": 1}),
    ("anthropic", {"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": 10**19}),
    ("gemini embeddings", {"usage_metadata": {"prompt_token_count": 10**19}}),
    ("gemini embeddings", {"embeddings": [{"statistics": {"token_count": 10**12}}]}),
    ("mistral", {"prompt_tokens": 1e300, "completion_tokens": 1}),
    ("bedrock converse", {"inputTokens": 2**63, "outputTokens": 1}),
])
def test_implausible_usage_is_rejected(name, document):
    with pytest.raises(InvalidUsage):
        EXTRACTORS[name](document)


_COUNTS = st.one_of(st.integers(-2, 3), st.integers(-2, 12),
                    st.integers(MAX_TOKENS_PER_CALL - 12, MAX_TOKENS_PER_CALL + 2),
                    st.sampled_from([10**19]))


@settings(max_examples=1000, deadline=None)
@given(counts=st.tuples(*[_COUNTS] * 6))
def test_validate_gives_plain_counts_the_verdict_of_the_general_checks(counts):
    """``Usage.validate`` tells consistent plain int counts apart at once: the same verdict, error
    and implausible count as the general checks, which a zero tool-call count goes through."""
    def verdict(usage):
        before = implausible_count()
        try:
            outcome = usage.validate() is usage
        except InvalidUsage as exc:
            outcome = type(exc)
        return outcome, implausible_count() - before

    assert verdict(Usage(*counts)) == verdict(Usage(*counts, tool_calls={"web_search": 0}))
