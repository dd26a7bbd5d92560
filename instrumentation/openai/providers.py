"""Which provider an openai-SDK client is really talking to, from its ``base_url``.

The openai SDK is the client for many OpenAI-compatible APIs; pricing needs the real
provider. Values follow the GenAI semconv well-known ``gen_ai.provider.name`` values where
one exists (openai, azure.ai.openai, deepseek, groq, x_ai, mistral_ai) and a lower-case
name otherwise (openrouter, together_ai, fireworks_ai).

Overrides, in order:
1. ``TOKENTRAIL_OPENAI_PROVIDER`` (env): force the provider for every openai-SDK call
   (gateways and proxies such as LiteLLM, and tests).
2. On loopback hosts only (127.0.0.1, localhost, ::1), a first path segment naming a
   provider selects it: ``http://127.0.0.1:8080/deepseek/v1``. Tests use this to talk to
   several fake providers through one server.
3. The host name, below. Anything else is ``openai`` with its ``server.address``.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

from tokentrail.config import env
from tokentrail.instrumentation import genai_span
from tokentrail.state import BoundedMemo

PROVIDER_ENV = "TOKENTRAIL_OPENAI_PROVIDER"

OPENAI = "openai"
AZURE_OPENAI = "azure.ai.openai"
DEEPSEEK = "deepseek"
OPENROUTER = "openrouter"
GROQ = "groq"
XAI = "x_ai"
TOGETHER = "together_ai"
FIREWORKS = "fireworks_ai"
MISTRAL = "mistral_ai"

KNOWN = (OPENAI, AZURE_OPENAI, DEEPSEEK, OPENROUTER, GROQ, XAI, TOGETHER, FIREWORKS, MISTRAL)

# host suffix -> provider (a suffix matches the host itself or any sub-domain)
_HOSTS: tuple[tuple[str, str], ...] = (
    ("api.openai.com", OPENAI),
    ("openai.azure.com", AZURE_OPENAI),
    ("cognitiveservices.azure.com", AZURE_OPENAI),
    ("services.ai.azure.com", AZURE_OPENAI),
    ("api.deepseek.com", DEEPSEEK),
    ("openrouter.ai", OPENROUTER),
    ("api.groq.com", GROQ),
    ("api.x.ai", XAI),
    ("api.together.xyz", TOGETHER),
    ("api.together.ai", TOGETHER),
    ("api.fireworks.ai", FIREWORKS),
    ("api.mistral.ai", MISTRAL),
)

# names accepted in the loopback path and the env override, besides the values themselves
_ALIASES = {
    "azure": AZURE_OPENAI,
    "azure_openai": AZURE_OPENAI,
    "xai": XAI,
    "x-ai": XAI,
    "together": TOGETHER,
    "fireworks": FIREWORKS,
    "mistral": MISTRAL,
}

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Endpoint(NamedTuple):
    provider: str
    server_address: str | None
    server_port: int | None = None


def normalise(name: str) -> str | None:
    key = name.strip().lower()
    if key in KNOWN:
        return key
    return _ALIASES.get(key)


def _from_url(base_url: str) -> Endpoint:
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    _, port = genai_span.server_of(base_url)
    if host in _LOOPBACK:
        first = parts.path.strip("/").split("/", 1)[0]
        chosen = normalise(first) if first else None
        if chosen:
            return Endpoint(chosen, host, port)
    for suffix, provider in _HOSTS:
        if host == suffix or host.endswith("." + suffix):
            return Endpoint(provider, host, port)
    return Endpoint(OPENAI, host or None, port)


_endpoints: BoundedMemo[str, Endpoint] = BoundedMemo(256)


def detect(base_url: object) -> Endpoint:
    """The provider and server address for a client's base URL (cheap: memoised)."""
    endpoint = _endpoints.get(genai_span.url_text(base_url) if base_url else "", _from_url)
    forced = env(PROVIDER_ENV)
    if forced:
        return Endpoint(normalise(forced) or forced.strip().lower(), endpoint.server_address, endpoint.server_port)
    return endpoint
