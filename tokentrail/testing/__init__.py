"""Test helpers, public so users can test their own attribution: a fake provider server
speaking the real APIs' wire shapes, and an in-memory tokentrail pipeline."""

from tokentrail.testing import anthropic_api, bedrock_api, gemini_api, mistral_api, openai_api
from tokentrail.testing.pipeline import InMemoryPipeline
from tokentrail.testing.server import FakeProviderServer, FakeRequest, FakeResponse

# Provider fakes, each a module with ``register(server)``.
# OpenAI is registered last: its routes accept any path prefix, so a provider that also
# serves ``/v1/chat/completions`` (Mistral) keeps that exact path; openai-SDK tests use
# ``openai_api.base_url(server)`` (``/openai/v1``).
PROVIDER_FAKES = (anthropic_api, bedrock_api, gemini_api, mistral_api, openai_api)


def fake_provider() -> FakeProviderServer:
    """A started ``FakeProviderServer`` with every provider fake registered.

    Use it as a context manager (``with fake_provider() as server:``) or call ``.stop()``.
    """
    server = FakeProviderServer()
    for module in PROVIDER_FAKES:
        module.register(server)
    return server.start()


__all__ = ["InMemoryPipeline", "FakeProviderServer", "FakeRequest", "FakeResponse", "fake_provider", "PROVIDER_FAKES"]
