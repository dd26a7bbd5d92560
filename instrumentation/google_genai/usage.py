"""Google GenAI usage -> ``Usage``: pure functions, no SDK import.

``usageMetadata`` semantics (Gemini API and Vertex AI alike):
- ``prompt_token_count`` includes ``cached_content_token_count`` (cache reads);
- ``tool_use_prompt_token_count`` (results of server-side tools such as Search grounding) is
  *not* part of the prompt count but is billed as input, so it is added to input;
- ``thoughts_token_count`` is *not* part of ``candidates_token_count`` but is billed as output,
  so output = candidates + thoughts and reasoning = thoughts;
- there is no cache-write count: explicit caches are created (and billed for storage) by
  ``caches.create``, outside any generate call.
In a stream every chunk repeats the running totals: the last chunk's block is the call's
usage; summing chunks would double count.
"""

from __future__ import annotations

from typing import Any

from tokentrail.processor.usage import Usage

# Billable server-side tool, as the rate card names it.
WEB_SEARCH = "web_search"


def _get(obj: Any, snake: str, camel: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(snake, obj.get(camel))
    return getattr(obj, snake, None)


def _count(obj: Any, snake: str, camel: str) -> int:
    value = _get(obj, snake, camel)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{snake}={value!r} is not a token count")
    return value


def usage_from_metadata(metadata: Any, *, web_searches: int = 0) -> Usage | None:
    """The ``Usage`` of a ``usage_metadata`` block (SDK object or REST dict); None when absent.

    Raises TypeError/ValueError on malformed counts (the caller records ``no_usage``).
    """
    if metadata is None:
        return None
    prompt = _get(metadata, "prompt_token_count", "promptTokenCount")
    candidates = _get(metadata, "candidates_token_count", "candidatesTokenCount")
    if prompt is None and candidates is None:
        return None
    thoughts = _count(metadata, "thoughts_token_count", "thoughtsTokenCount")
    tool_use = _count(metadata, "tool_use_prompt_token_count", "toolUsePromptTokenCount")
    cached = _count(metadata, "cached_content_token_count", "cachedContentTokenCount")
    tools = {WEB_SEARCH: web_searches} if web_searches else {}
    return Usage(
        input_tokens=_count(metadata, "prompt_token_count", "promptTokenCount") + tool_use,
        output_tokens=_count(metadata, "candidates_token_count", "candidatesTokenCount") + thoughts,
        cache_read_tokens=cached,
        reasoning_tokens=thoughts,
        tool_calls=tools,
    )


def web_search_count(response: Any) -> int:
    """Grounded answers are billed per grounded prompt: 1 when any candidate ran a web search."""
    for candidate in _get(response, "candidates", "candidates") or ():
        grounding = _get(candidate, "grounding_metadata", "groundingMetadata")
        if grounding is not None and _get(grounding, "web_search_queries", "webSearchQueries"):
            return 1
    return 0


def usage_from_response(response: Any) -> Usage | None:
    return usage_from_metadata(_get(response, "usage_metadata", "usageMetadata"), web_searches=web_search_count(response))


def embedding_usage(response: Any) -> Usage | None:
    """Input tokens of an ``embed_content`` response: its ``usage_metadata`` when present, else
    the per-embedding ``statistics.token_count`` (Vertex ``predict``); None when neither is."""
    metadata = _get(response, "usage_metadata", "usageMetadata")
    prompt = _get(metadata, "prompt_token_count", "promptTokenCount")
    if prompt is not None:
        return Usage(input_tokens=_count(metadata, "prompt_token_count", "promptTokenCount"), output_tokens=0)
    total, seen = 0, False
    for embedding in _get(response, "embeddings", "embeddings") or ():
        count = _get(_get(embedding, "statistics", "statistics"), "token_count", "tokenCount")
        if count is None:
            continue
        if isinstance(count, float) and count.is_integer():  # Vertex sends 8.0
            count = int(count)
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError(f"token_count={count!r} is not a token count")
        total, seen = total + count, True
    return Usage(input_tokens=total, output_tokens=0) if seen else None


def finish_reasons(response: Any) -> list[str]:
    out = []
    for candidate in _get(response, "candidates", "candidates") or ():
        reason = _get(candidate, "finish_reason", "finishReason")
        if reason is not None:
            out.append(str(getattr(reason, "value", reason)).lower())
    return out


def model_id(model: Any) -> str | None:
    """``models/x``, ``publishers/google/models/x``, ``projects/.../models/x`` or ``google/x`` -> ``x``."""
    if not isinstance(model, str) or not model:
        return None
    return model.rstrip("/").rsplit("/", 1)[-1]


class StreamUsage:
    """Folds stream chunks: keeps the last usage block and the response facts seen so far."""

    __slots__ = ("metadata", "model", "response_id", "reasons", "web_searches")

    def __init__(self) -> None:
        self.metadata: Any = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.reasons: list[str] = []
        self.web_searches = 0

    def add(self, chunk: Any) -> None:
        metadata = _get(chunk, "usage_metadata", "usageMetadata")
        if metadata is not None:
            self.metadata = metadata  # running totals: the latest wins
        self.model = _get(chunk, "model_version", "modelVersion") or self.model
        self.response_id = _get(chunk, "response_id", "responseId") or self.response_id
        self.reasons = finish_reasons(chunk) or self.reasons
        self.web_searches = max(self.web_searches, web_search_count(chunk))

    def response(self) -> dict[str, Any]:
        return {"model": self.model, "response_id": self.response_id, "finish_reasons": self.reasons}

    def usage(self) -> Usage | None:
        return usage_from_metadata(self.metadata, web_searches=self.web_searches)
