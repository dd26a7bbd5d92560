"""Test helpers, public so users can test their own attribution: a fake provider server
speaking the real APIs' wire shapes, and an in-memory tokentrail pipeline."""

import importlib
import logging

from tokentrail.testing.pipeline import InMemoryPipeline
from tokentrail.testing.server import FakeProviderServer, FakeRequest, FakeResponse

# Provider fakes, each a module with ``register(server)``. Add yours here (one line).
# OpenAI is registered last: its routes accept any path prefix, so a provider that also
# serves ``/v1/chat/completions`` (Mistral) keeps that exact path; openai-SDK tests use
# ``openai_api.base_url(server)`` (``/openai/v1``).
PROVIDER_FAKES = (
    "tokentrail.testing.anthropic_api",
    "tokentrail.testing.bedrock_api",
    "tokentrail.testing.gemini_api",
    "tokentrail.testing.mistral_api",
    "tokentrail.testing.openai_api",
)


def fake_provider() -> FakeProviderServer:
    """A started ``FakeProviderServer`` with every available provider fake registered.

    Use it as a context manager (``with fake_provider() as server:``) or call ``.stop()``.
    """
    server = FakeProviderServer()
    for name in PROVIDER_FAKES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a provider fake not written (or its deps not installed)
            logging.getLogger(__name__).debug("provider fake %s unavailable", name, exc_info=True)
            continue
        module.register(server)
    return server.start()


__all__ = ["InMemoryPipeline", "FakeProviderServer", "FakeRequest", "FakeResponse", "fake_provider", "PROVIDER_FAKES"]
