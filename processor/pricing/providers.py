"""Provider names: OpenTelemetry GenAI values -> genai-prices provider ids.

Instrumentations report `gen_ai.provider.name` in OTel spelling (`aws.bedrock`, `gcp.vertex_ai`,
`azure.ai.openai`, ...), older ones `gen_ai.system` with legacy spellings (`gemini`, `vertex_ai`,
`bedrock`). Pricing only needs to know which genai-prices provider table to read.
"""

from __future__ import annotations

# Legacy / SDK spellings -> the OTel GenAI provider value.
_OTEL_ALIASES = {
    "gemini": "gcp.gemini",
    "google_genai": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "aws_bedrock": "aws.bedrock",
    "azure_openai": "azure.ai.openai",
    "az.ai.openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "x-ai": "x_ai",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "moonshotai": "moonshot_ai",
    "moonshot": "moonshot_ai",
}

# OTel GenAI provider value -> genai-prices provider id.
_PRICE_TABLE = {
    "openai": "openai",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "mistral_ai": "mistral",
    "deepseek": "deepseek",
    "groq": "groq",
    "x_ai": "x-ai",
    "openrouter": "openrouter",
    "together": "together",
    "fireworks": "fireworks",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "cerebras": "cerebras",
    "moonshot_ai": "moonshotai",
}


def normalize_provider(name: object) -> str | None:
    """The OTel GenAI spelling of a provider name (``gemini`` -> ``gcp.gemini``); None if absent."""
    if not isinstance(name, str) or not name.strip():
        return None
    key = name.strip().lower()
    return _OTEL_ALIASES.get(key, key)


def spellings() -> dict[str, tuple[str, ...]]:
    """Each OTel provider value that has a price table -> the raw spellings normalized to it."""
    out = {name: [name] for name in _PRICE_TABLE}
    for alias, name in _OTEL_ALIASES.items():
        out.setdefault(name, [name]).append(alias)
    return {name: tuple(names) for name, names in out.items()}


def price_table_id(provider: str | None) -> str | None:
    """The genai-prices provider id for a normalised provider name, None when it has no table."""
    if provider is None:
        return None
    return _PRICE_TABLE.get(provider)
