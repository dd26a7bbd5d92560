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
usage; summing chunks would double count. SDK objects and REST dicts (camelCase) alike.
"""

from __future__ import annotations

from typing import Any

from tokentrail.instrumentation.fields import block, count, field, items, reported
from tokentrail.instrumentation.streams import StreamState
from tokentrail.processor.usage import Usage

# Billable server-side tool, as the rate card names it.
WEB_SEARCH = "web_search"


def usage_from_metadata(metadata: Any, *, web_searches: int = 0) -> Usage | None:
    """The ``Usage`` of a ``usage_metadata`` block; None when absent. Raises ``InvalidUsage``."""
    found = reported(metadata, "prompt_token_count", "candidates_token_count")
    if found is None:
        return None
    prompt, candidates = found
    thoughts = count(field(metadata, "thoughts_token_count"))
    return Usage(
        input_tokens=count(prompt) + count(field(metadata, "tool_use_prompt_token_count")),
        output_tokens=count(candidates) + thoughts,
        cache_read_tokens=count(field(metadata, "cached_content_token_count")),
        reasoning_tokens=thoughts,
        tool_calls={WEB_SEARCH: web_searches} if web_searches else {},
    ).validate()


def web_search_count(response: Any) -> int:
    """Grounded answers are billed per grounded prompt: 1 when any candidate ran a web search."""
    for candidate in items(response, "candidates"):
        if field(field(candidate, "grounding_metadata"), "web_search_queries"):
            return 1
    return 0


def usage_from_response(response: Any) -> Usage | None:
    return usage_from_metadata(field(response, "usage_metadata"), web_searches=web_search_count(response))


def embedding_usage(response: Any) -> Usage | None:
    """Input tokens of an ``embed_content`` response: its ``usage_metadata`` when present, else
    the per-embedding ``statistics.token_count`` (Vertex ``predict``, which sends 8.0); None
    when neither is."""
    prompt = field(block(response, "usage_metadata"), "prompt_token_count")
    if prompt is not None:
        return Usage(input_tokens=count(prompt), output_tokens=0).validate()
    counts = [c for c in (field(field(e, "statistics"), "token_count") for e in items(response, "embeddings"))
              if c is not None]
    return Usage(input_tokens=sum(count(c) for c in counts), output_tokens=0).validate() if counts else None


def finish_reasons(response: Any) -> list[str]:
    out = []
    for candidate in items(response, "candidates"):
        reason = field(candidate, "finish_reason")
        if reason is not None:
            out.append(str(getattr(reason, "value", reason)).lower())
    return out


def response_facts(response: Any) -> dict[str, Any]:
    """``LLMCall.set_response`` arguments of a response or a stream chunk."""
    return {"model": field(response, "model_version"), "response_id": field(response, "response_id"),
            "finish_reasons": finish_reasons(response)}


def model_id(model: Any) -> str | None:
    """``models/x``, ``publishers/google/models/x``, ``projects/.../models/x`` or ``google/x`` -> ``x``."""
    if not isinstance(model, str) or not model:
        return None
    return model.rstrip("/").rsplit("/", 1)[-1]


class GenerateStreamState(StreamState):
    """Folds stream chunks: keeps the last usage block and the response facts seen so far."""

    __slots__ = ("metadata", "model", "response_id", "reasons", "web_searches")

    def __init__(self) -> None:
        self.metadata: Any = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.reasons: list[str] = []
        self.web_searches = 0

    def add(self, chunk: Any) -> None:
        metadata = field(chunk, "usage_metadata")
        if metadata is not None:
            self.metadata = metadata  # running totals: the latest wins
        facts = response_facts(chunk)
        self.model = facts["model"] or self.model
        self.response_id = facts["response_id"] or self.response_id
        self.reasons = facts["finish_reasons"] or self.reasons
        self.web_searches = max(self.web_searches, web_search_count(chunk))

    def response(self) -> dict[str, Any]:
        return {"model": self.model, "response_id": self.response_id, "finish_reasons": self.reasons}

    def usage(self) -> Usage | None:
        return usage_from_metadata(self.metadata, web_searches=self.web_searches)
