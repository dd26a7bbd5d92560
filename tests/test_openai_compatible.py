"""OpenAI-compatible endpoints through the openai SDK: each priced at its own provider's rates.

Loopback URLs cannot carry the real host names, so the fake server is reached through the
provider-prefixed base URL that the openai instrumentation recognises on loopback only
(``http://127.0.0.1:PORT/deepseek/v1``, see ``tokentrail.instrumentation.openai.providers``).
Each call runs unary and streamed (stream and unary must agree); the expected costs use the
providers' published prices (per million tokens), chosen where they differ from OpenAI's:
- DeepSeek deepseek-v3.1-terminus: $0.27 input (cache miss), $0.13 cache hit, $0.95 output.
- OpenRouter deepseek/deepseek-r1-distill-llama-70b: $0.10 / $0.40 (no such model at OpenAI).
- Groq llama-3.3-70b-versatile: $0.59 / $0.79.
- xAI grok-3-mini: $0.30 input, $0.075 cached, $0.50 output; reasoning billed as output.
- Azure OpenAI gpt-4o (global standard): $2.50 / $1.25 cached / $10, as OpenAI's.
"""

from __future__ import annotations

import asyncio
import textwrap
from decimal import Decimal

import openai
import pytest

from tokentrail.instrumentation.openai import OpenAIInstrumentor
from tokentrail.processor import pricing
from tokentrail.semconv import attributes as attr
from tokentrail.testing import InMemoryPipeline, openai_api

M = Decimal(1_000_000)
MESSAGES = [{"role": "user", "content": "hello"}]


def chat(client, stream: bool, model: str, asynchronous: bool = False):
    if not stream and not asynchronous:
        return client.chat.completions.create(model=model, messages=MESSAGES)
    if not asynchronous:
        return list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    raise AssertionError("use achat")


def run_both(server, pipeline, client, request_model: str, **reply):
    """The same scripted answer unary, streamed, and async (a client of the same class and
    endpoint); returns the three LLM spans."""
    spans = []
    for mode in ("sync", "stream", "async"):
        pipeline.clear()
        server.enqueue(openai_api.reply(**reply))
        if mode == "async":
            asyncio.run(achat(client, request_model))
        else:
            chat(client, mode == "stream", request_model)
        [span] = pipeline.llm_spans()
        spans.append(span)
    return spans


async def achat(client, model: str):
    if isinstance(client, openai.AzureOpenAI):
        aclient = openai.AsyncAzureOpenAI(
            api_key="test-key", api_version="2024-10-21", azure_endpoint=str(client._azure_endpoint),
            azure_deployment=client._azure_deployment, max_retries=0)
    else:
        aclient = openai.AsyncOpenAI(api_key="test-key", base_url=str(client.base_url), max_retries=0)
    return await aclient.chat.completions.create(model=model, messages=MESSAGES)


def assert_same_usage_and_cost(spans):
    keys = (
        attr.GEN_AI_USAGE_INPUT_TOKENS, attr.GEN_AI_USAGE_OUTPUT_TOKENS, attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
        attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, attr.TOKENTRAIL_COST_NANO_USD, attr.GEN_AI_PROVIDER_NAME,
    )
    first, *others = ({k: s.attributes.get(k) for k in keys} for s in spans)
    assert all(other == first for other in others), (first, others)


def usd(span) -> Decimal:
    assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "priced", dict(span.attributes)
    return Decimal(span.attributes[attr.TOKENTRAIL_COST_NANO_USD]) / Decimal(10**9)


def client_for(server, provider: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="test-key", base_url=openai_api.base_url(server, provider), max_retries=0)


def test_deepseek_cache_hit_and_miss_fields(server, pipeline):
    usage = {
        "prompt_tokens": 10_000, "completion_tokens": 500, "total_tokens": 10_500,
        "prompt_cache_hit_tokens": 8_000, "prompt_cache_miss_tokens": 2_000,
    }
    spans = run_both(server, pipeline, client_for(server, "deepseek"), "deepseek-v3.1-terminus", usage=usage)
    assert_same_usage_and_cost(spans)
    span = spans[0]
    assert span.attributes[attr.GEN_AI_PROVIDER_NAME] == "deepseek"
    assert span.attributes[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 8_000
    assert usd(span) == (2_000 * Decimal("0.27") + 8_000 * Decimal("0.13") + 500 * Decimal("0.95")) / M  # $0.002055


def test_openrouter_model_priced_at_openrouter_rates(server, pipeline):
    spans = run_both(server, pipeline, client_for(server, "openrouter"), "deepseek/deepseek-r1-distill-llama-70b",
                     prompt_tokens=4_000, completion_tokens=1_000)
    assert_same_usage_and_cost(spans)
    assert spans[0].attributes[attr.GEN_AI_PROVIDER_NAME] == "openrouter"
    assert usd(spans[0]) == (4_000 * Decimal("0.10") + 1_000 * Decimal("0.40")) / M


def test_openrouter_cached_prompt(server, pipeline):
    # deepseek/deepseek-chat-v3-0324 on OpenRouter from 2026-11-03: $0.25 / $0.11 cached / $1.00.
    spans = run_both(server, pipeline, client_for(server, "openrouter"), "deepseek/deepseek-chat-v3-0324",
                     prompt_tokens=10_000, cached_tokens=7_000, completion_tokens=800)
    assert_same_usage_and_cost(spans)
    assert usd(spans[0]) == (3_000 * Decimal("0.25") + 7_000 * Decimal("0.11") + 800 * Decimal(1)) / M


def test_groq(server, pipeline):
    spans = run_both(server, pipeline, client_for(server, "groq"), "llama-3.3-70b-versatile",
                     prompt_tokens=3_000, completion_tokens=700)
    assert_same_usage_and_cost(spans)
    assert spans[0].attributes[attr.GEN_AI_PROVIDER_NAME] == "groq"
    assert usd(spans[0]) == (3_000 * Decimal("0.59") + 700 * Decimal("0.79")) / M


def test_groq_cached_prompt_and_reasoning(server, pipeline):
    # openai/gpt-oss-120b on Groq: $0.15 / $0.075 cached / $0.60; reasoning inside completion_tokens.
    spans = run_both(server, pipeline, client_for(server, "groq"), "openai/gpt-oss-120b",
                     prompt_tokens=8_000, cached_tokens=4_000, completion_tokens=900, reasoning_tokens=600)
    assert_same_usage_and_cost(spans)
    span = spans[0]
    assert span.attributes[attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 600
    assert span.attributes[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 900
    assert usd(span) == (4_000 * Decimal("0.15") + 4_000 * Decimal("0.075") + 900 * Decimal("0.60")) / M


def test_xai_cached_prompt(server, pipeline):
    spans = run_both(server, pipeline, client_for(server, "xai"), "grok-3-mini",
                     prompt_tokens=10_000, cached_tokens=6_000, completion_tokens=400)
    assert_same_usage_and_cost(spans)
    assert spans[0].attributes[attr.GEN_AI_PROVIDER_NAME] == "x_ai"
    expected = (4_000 * Decimal("0.30") + 6_000 * Decimal("0.075") + 400 * Decimal("0.50")) / M
    assert usd(spans[0]) == expected


def test_xai_reasoning_tokens_are_billed_as_output(server, pipeline):
    # xAI reports reasoning_tokens *beside* completion_tokens (total = prompt + completion +
    # reasoning) and bills them at the completion price.
    usage = {
        "prompt_tokens": 1_000, "completion_tokens": 50, "total_tokens": 1_350,
        "prompt_tokens_details": {"cached_tokens": 0, "text_tokens": 1_000},
        "completion_tokens_details": {"reasoning_tokens": 300},
    }
    spans = run_both(server, pipeline, client_for(server, "xai"), "grok-3-mini", usage=usage)
    assert_same_usage_and_cost(spans)
    span = spans[0]
    assert span.attributes[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 350
    assert span.attributes[attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 300
    assert usd(span) == (1_000 * Decimal("0.30") + 350 * Decimal("0.50")) / M


def azure_client(server, deployment: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        api_key="test-key", api_version="2024-10-21", azure_endpoint=f"{server.url}/azure",
        azure_deployment=deployment, max_retries=0,
    )


def test_azure_deployment_name_differs_from_model_response_model_wins(server, pipeline):
    client = azure_client(server, "prod-chat-eu")
    spans = run_both(server, pipeline, client, "prod-chat-eu", model="gpt-4o-2024-11-20",
                     prompt_tokens=2_000, completion_tokens=500)
    assert_same_usage_and_cost(spans)
    span = spans[0]
    assert span.attributes[attr.GEN_AI_PROVIDER_NAME] == "azure.ai.openai"
    assert span.attributes[attr.GEN_AI_REQUEST_MODEL] == "prod-chat-eu"
    assert span.attributes[attr.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-11-20"
    assert usd(span) == Decimal("0.0100")  # USERS.md: GPT-4o 2,000 in / 500 out


def test_azure_cached_prompt(server, pipeline):
    client = azure_client(server, "prod-chat-eu")
    spans = run_both(server, pipeline, client, "prod-chat-eu", model="gpt-4o-2024-11-20",
                     prompt_tokens=10_000, cached_tokens=8_000, completion_tokens=500)
    assert_same_usage_and_cost(spans)
    assert usd(spans[0]) == (2_000 * Decimal("2.50") + 8_000 * Decimal("1.25") + 500 * Decimal(10)) / M


def test_azure_deployment_alias_from_the_overlay(server, tmp_path, monkeypatch):
    # A deployment whose responses carry only the deployment name: unpriced until the user's
    # rate card says what it is.
    server.reset()
    client = azure_client(server, "team-a-4o")
    with InMemoryPipeline(instrument=[OpenAIInstrumentor()]) as p:
        server.enqueue(openai_api.reply(prompt_tokens=2_000, completion_tokens=500))
        client.chat.completions.create(model="team-a-4o", messages=MESSAGES)
        [span] = p.llm_spans()
        assert span.attributes[attr.TOKENTRAIL_COST_STATUS] == "unpriced"

    card = tmp_path / "rate-card.yaml"
    card.write_text(textwrap.dedent("""\
        version: 1
        aliases:
          - provider: azure.ai.openai
            name: team-a-4o
            model: gpt-4o
    """))
    monkeypatch.setenv(pricing.ENV_RATE_CARD, str(card))
    pricing.reload()
    try:
        with InMemoryPipeline(instrument=[OpenAIInstrumentor()]) as p:
            for stream in (False, True):
                server.enqueue(openai_api.reply(prompt_tokens=2_000, completion_tokens=500))
                chat(client, stream, "team-a-4o")
            spans = p.llm_spans()
            assert len(spans) == 2
            assert_same_usage_and_cost(spans)
            assert usd(spans[0]) == Decimal("0.0100")
    finally:
        monkeypatch.delenv(pricing.ENV_RATE_CARD)
        pricing.reload()


def test_async_compatible_client(server, pipeline):
    async def run():
        client = openai.AsyncOpenAI(api_key="k", base_url=openai_api.base_url(server, "groq"), max_retries=0)
        server.enqueue(openai_api.reply(prompt_tokens=3_000, completion_tokens=700))
        await client.chat.completions.create(model="llama-3.3-70b-versatile", messages=MESSAGES)

    asyncio.run(run())
    [span] = pipeline.llm_spans()
    assert usd(span) == (3_000 * Decimal("0.59") + 700 * Decimal("0.79")) / M
