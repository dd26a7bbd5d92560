"""Provider detection from base_url, and OpenAI-compatible providers priced at their own rates."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from tokentrail.instrumentation.openai import providers
from tokentrail.processor.pricing import quote
from tokentrail.processor.usage import Usage
from tokentrail.semconv import attributes as attr
from tokentrail.testing import openai_api

from helpers import only_llm_span, usd, user_message


@pytest.mark.parametrize(
    ("url", "provider", "address"),
    [
        ("https://api.openai.com/v1", "openai", "api.openai.com"),
        ("https://contoso.openai.azure.com/openai/deployments/prod", "azure.ai.openai", "contoso.openai.azure.com"),
        ("https://contoso.cognitiveservices.azure.com/openai", "azure.ai.openai", "contoso.cognitiveservices.azure.com"),
        ("https://api.deepseek.com", "deepseek", "api.deepseek.com"),
        ("https://api.deepseek.com/v1", "deepseek", "api.deepseek.com"),
        ("https://openrouter.ai/api/v1", "openrouter", "openrouter.ai"),
        ("https://api.groq.com/openai/v1", "groq", "api.groq.com"),
        ("https://api.x.ai/v1", "x_ai", "api.x.ai"),
        ("https://api.together.xyz/v1", "together_ai", "api.together.xyz"),
        ("https://api.fireworks.ai/inference/v1", "fireworks_ai", "api.fireworks.ai"),
        ("https://api.mistral.ai/v1", "mistral_ai", "api.mistral.ai"),
        ("https://llm-gateway.internal.example:8443/v1", "openai", "llm-gateway.internal.example"),
        ("http://127.0.0.1:8080/v1", "openai", "127.0.0.1"),
        ("http://127.0.0.1:8080/deepseek/v1", "deepseek", "127.0.0.1"),
        ("http://localhost:9/azure/openai", "azure.ai.openai", "localhost"),
        ("http://127.0.0.1:8080/notaprovider/v1", "openai", "127.0.0.1"),
        # a provider name in the path of a real host is not an override
        ("https://evil.example/deepseek/v1", "openai", "evil.example"),
        ("https://api.openai.com.evil.example/v1", "openai", "api.openai.com.evil.example"),
    ],
)
def test_detect_provider_from_base_url(url, provider, address, monkeypatch):
    monkeypatch.delenv(providers.PROVIDER_ENV, raising=False)
    assert providers.detect(url)[:2] == (provider, address)


def test_env_override(monkeypatch):
    monkeypatch.setenv(providers.PROVIDER_ENV, "groq")
    assert providers.detect("http://gateway:4000/v1") == ("groq", "gateway", 4000)
    monkeypatch.setenv(providers.PROVIDER_ENV, "x-ai")
    assert providers.detect("https://api.openai.com/v1").provider == "x_ai"


def _client(server, provider):
    return openai.OpenAI(base_url=openai_api.base_url(server, provider), api_key="sk-test", max_retries=0)


@pytest.mark.parametrize(
    ("provider", "model", "rate_card_prefix"),
    [
        ("deepseek", "deepseek-chat", "deepseek/"),
        ("groq", "llama-3.3-70b-versatile", "groq/"),
        ("xai", "grok-3", "x-ai/"),
        ("openrouter", "openai/gpt-4o", "openrouter/"),
        ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "together/"),
        ("fireworks", "accounts/fireworks/models/llama-v3p1-8b-instruct", "fireworks/"),
        ("mistral", "mistral-small-latest", "mistral/"),
    ],
)
def test_compatible_provider_priced_at_its_own_rates(pipeline, server, provider, model, rate_card_prefix):
    server.enqueue(openai_api.reply(prompt_tokens=200_000, completion_tokens=50_000))
    _client(server, provider).chat.completions.create(model=model, messages=user_message())

    span = only_llm_span(pipeline)
    expected_provider = providers.normalise(provider)
    assert span.attributes[attr.GEN_AI_PROVIDER_NAME] == expected_provider
    assert span.attributes[attr.TOKENTRAIL_PRICING_MODEL].startswith(rate_card_prefix)
    expected = quote(model, Usage(input_tokens=200_000, output_tokens=50_000), provider=expected_provider)
    assert expected.status == "priced"
    assert usd(span) == expected.total_usd


def test_deepseek_cache_hits_are_cache_reads(pipeline, server):
    usage = {"prompt_tokens": 100_000, "completion_tokens": 10_000, "total_tokens": 110_000,
             "prompt_cache_hit_tokens": 80_000, "prompt_cache_miss_tokens": 20_000}
    server.enqueue(openai_api.reply(usage=usage))
    _client(server, "deepseek").chat.completions.create(model="deepseek-chat", messages=user_message())

    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 80_000
    expected = quote("deepseek-chat", Usage(input_tokens=100_000, output_tokens=10_000, cache_read_tokens=80_000),
                     provider="deepseek")
    assert usd(span) == expected.total_usd
    full_price = quote("deepseek-chat", Usage(input_tokens=100_000, output_tokens=10_000), provider="deepseek")
    assert usd(span) < full_price.total_usd


def test_xai_reasoning_beside_completion_is_billed_as_output(pipeline, server):
    usage = {"prompt_tokens": 1_000, "completion_tokens": 200, "total_tokens": 1_500,
             "completion_tokens_details": {"reasoning_tokens": 300}}
    server.enqueue(openai_api.reply(usage=usage))
    _client(server, "xai").chat.completions.create(model="grok-3-mini", messages=user_message())

    span = only_llm_span(pipeline)
    assert span.attributes[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 500
    assert span.attributes[attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 300


def test_azure_deployment_is_the_request_model_and_the_response_model_is_priced(pipeline, server):
    client = openai.AzureOpenAI(
        azure_endpoint=f"{server.url}/azure", api_key="az-key", api_version="2024-10-21", max_retries=0
    )
    server.enqueue(openai_api.reply(prompt_tokens=2000, completion_tokens=500, model="gpt-4o-2024-11-20"))
    client.chat.completions.create(model="prod-chat-deployment", messages=user_message())

    assert "/openai/deployments/prod-chat-deployment/chat/completions" in server.requests[-1].path
    span = only_llm_span(pipeline)
    assert span.name == "chat prod-chat-deployment"
    assert span.attributes[attr.GEN_AI_PROVIDER_NAME] == "azure.ai.openai"
    assert span.attributes[attr.GEN_AI_REQUEST_MODEL] == "prod-chat-deployment"
    assert span.attributes[attr.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-11-20"
    assert usd(span) == Decimal("0.0100")


def test_provider_env_override_end_to_end(pipeline, server, monkeypatch):
    monkeypatch.setenv(providers.PROVIDER_ENV, "deepseek")
    server.enqueue(openai_api.reply(prompt_tokens=1000, completion_tokens=100))
    _client(server, "v1-gateway").chat.completions.create(model="deepseek-chat", messages=user_message())
    assert only_llm_span(pipeline).attributes[attr.GEN_AI_PROVIDER_NAME] == "deepseek"
