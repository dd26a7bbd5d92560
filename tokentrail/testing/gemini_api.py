"""Fake Google GenAI endpoints: the Gemini API and Vertex AI ``generateContent`` surfaces.

Wire shapes follow the REST API that ``google-genai`` parses (camelCase JSON, the
``usageMetadata`` block, SSE for ``streamGenerateContent?alt=sse``). Scenarios are named
fixtures (cache hit, long context, thinking, tool call, search grounding, error...); the same
scenario answers a unary and a streamed request with the same final usage, so tests can check
that both paths price identically.

Gemini streams repeat ``usageMetadata`` on every chunk as *running totals* (the prompt count
on every chunk, the candidate count growing): a consumer that sums chunks double counts.
The fake reproduces that.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tokentrail.testing.server import FakeProviderServer, FakeRequest, FakeResponse  # noqa: F401 (re-exported for tests)

# Gemini API: /v1beta/models/{model}:generateContent ; Vertex AI: /v1beta1/projects/{p}/locations/{l}/
# publishers/google/models/{model}:generateContent (or /v1beta1/publishers/google/models/... in express mode).
_MODEL_PATH = (
    r"/(?P<version>v1|v1beta|v1beta1|v1alpha)"
    r"(?:/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+))?"
    r"(?:/publishers/(?P<publisher>[^/]+))?"
    r"/(?:models|tunedModels)/(?P<model>[^/:]+)"
)


@dataclass(frozen=True)
class Scenario:
    """One canned answer: the final usage the API reports and what the model says."""

    prompt_tokens: int = 12
    candidates_tokens: int = 8
    cached_tokens: int = 0
    thoughts_tokens: int = 0
    tool_use_prompt_tokens: int = 0
    text: str = "Hello from the fake Gemini."
    thought_text: str | None = None
    function_call: dict[str, Any] | None = None
    grounding: bool = False
    finish_reason: str = "STOP"
    error: tuple[int, str, str] | None = None  # (http status, status string, message)
    extra_usage: dict[str, Any] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.candidates_tokens + self.thoughts_tokens + self.tool_use_prompt_tokens


SCENARIOS: dict[str, Scenario] = {
    "basic": Scenario(),
    # Implicit or explicit context cache: cachedContentTokenCount is part of promptTokenCount.
    "cache_hit": Scenario(prompt_tokens=12_000, cached_tokens=10_000, candidates_tokens=300, text="Cached answer."),
    # Over 200k prompt tokens: gemini-2.5-pro switches to its long-context prices.
    "long_context": Scenario(prompt_tokens=250_000, candidates_tokens=1_000, text="Long answer."),
    # Thinking models: thoughtsTokenCount is NOT part of candidatesTokenCount, yet billed as output.
    "thinking": Scenario(
        prompt_tokens=1_000, candidates_tokens=500, thoughts_tokens=1_500,
        thought_text="Let me think about it.", text="The answer is 42.",
    ),
    "tool_call": Scenario(
        prompt_tokens=900, candidates_tokens=20, text="",
        function_call={"name": "get_weather", "args": {"city": "Paris"}},
    ),
    # Server-side tools (Google Search grounding): the tool results come back as toolUsePromptTokenCount.
    "search": Scenario(
        prompt_tokens=800, candidates_tokens=400, tool_use_prompt_tokens=2_000, grounding=True,
        text="According to recent sources, it is sunny.",
    ),
    "error": Scenario(error=(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")),
    "server_error": Scenario(error=(500, "INTERNAL", "An internal error has occurred.")),
}

_MARKER = re.compile(r"scenario:(\w+)")


def usage_metadata(s: Scenario, *, vertex: bool = False, candidates_tokens: int | None = None) -> dict:
    """The ``usageMetadata`` block; ``candidates_tokens`` is the running count on an intermediate stream chunk."""
    candidates = s.candidates_tokens if candidates_tokens is None else candidates_tokens
    usage: dict[str, Any] = {
        "promptTokenCount": s.prompt_tokens,
        "candidatesTokenCount": candidates,
        "totalTokenCount": s.prompt_tokens + candidates + s.thoughts_tokens + s.tool_use_prompt_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": s.prompt_tokens}],
    }
    if s.cached_tokens:
        usage["cachedContentTokenCount"] = s.cached_tokens
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": s.cached_tokens}]
    if s.tool_use_prompt_tokens:
        usage["toolUsePromptTokenCount"] = s.tool_use_prompt_tokens
        usage["toolUsePromptTokensDetails"] = [{"modality": "TEXT", "tokenCount": s.tool_use_prompt_tokens}]
    if s.thoughts_tokens:
        # Thinking happens before the answer: the full count shows from the first chunk on.
        usage["thoughtsTokenCount"] = s.thoughts_tokens
    if candidates:
        usage["candidatesTokensDetails"] = [{"modality": "TEXT", "tokenCount": candidates}]
    if vertex:
        usage["trafficType"] = "ON_DEMAND"
    usage.update(s.extra_usage)
    return usage


def _parts(s: Scenario, text: str | None = None, *, with_thought: bool = True) -> list[dict]:
    parts: list[dict] = []
    if with_thought and s.thought_text:
        parts.append({"text": s.thought_text, "thought": True})
    if s.function_call is not None:
        parts.append({"functionCall": s.function_call})
    body = s.text if text is None else text
    if body:
        parts.append({"text": body})
    return parts


def _candidate(s: Scenario, parts: list[dict], *, finish: bool) -> dict:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = s.finish_reason
        if s.grounding:
            candidate["groundingMetadata"] = {
                "webSearchQueries": ["weather today"],
                "groundingChunks": [{"web": {"uri": "https://example.com/weather", "title": "example.com"}}],
            }
    return candidate


def response_json(s: Scenario, model: str, *, vertex: bool = False, response_id: str = "fake-resp-1") -> dict:
    body: dict[str, Any] = {
        "candidates": [_candidate(s, _parts(s), finish=True)],
        "usageMetadata": usage_metadata(s, vertex=vertex),
        "modelVersion": model,
        "responseId": response_id,
    }
    if vertex:
        body["createTime"] = "2026-01-01T00:00:00.000000Z"
    return body


def stream_chunks(s: Scenario, model: str, *, vertex: bool = False, pieces: int = 3, response_id: str = "fake-resp-1") -> list[dict]:
    """The SSE payloads of a streamed answer: text split over ``pieces`` chunks, running usage on each."""
    text = s.text
    size = max(1, -(-len(text) // pieces)) if text else 1
    texts = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    chunks: list[dict] = []
    for index, piece in enumerate(texts):
        last = index == len(texts) - 1
        # Running candidate count: grows per chunk, reaches the final count on the last chunk.
        running = s.candidates_tokens if last else (s.candidates_tokens * (index + 1)) // (len(texts) + 1)
        parts = _parts(s, piece, with_thought=index == 0)
        if index and s.function_call is not None:
            parts = [p for p in parts if "functionCall" not in p]
        chunk: dict[str, Any] = {
            "candidates": [_candidate(s, parts, finish=last)],
            "usageMetadata": usage_metadata(s, vertex=vertex, candidates_tokens=running),
            "modelVersion": model,
            "responseId": response_id,
        }
        if vertex:
            chunk["createTime"] = "2026-01-01T00:00:00.000000Z"
        chunks.append(chunk)
    return chunks


def broken_sse(events: list[tuple[str | None, Any]], after: int) -> FakeResponse:
    """An SSE response in chunked transfer encoding cut after ``after`` events: the client sees
    a protocol error mid-stream (an unframed stream that just closes would look complete)."""
    frames = []
    for event, data in events:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        piece = (f"event: {event}\n" if event else "") + f"data: {text}\n\n"
        raw = piece.encode()
        frames.append(b"%x\r\n%s\r\n" % (len(raw), raw))
    frames.append(b"0\r\n\r\n")
    return FakeResponse(body=frames, content_type="text/event-stream",
                        headers={"Transfer-Encoding": "chunked"}, abort_after=after)


def error_json(status: int, status_text: str, message: str) -> dict:
    return {"error": {"code": status, "message": message, "status": status_text}}


def answer(s: Scenario, request: FakeRequest, **stream_options: Any) -> FakeResponse:
    """Answer ``request`` (unary or streamed, Gemini API or Vertex) with scenario ``s``."""
    match = request.match
    model = match.group("model") if match else "gemini-2.5-flash"
    vertex = bool(match and (match.group("project") or match.group("publisher")))
    if s.error is not None:
        status, status_text, message = s.error
        return FakeResponse(status=status, json=error_json(status, status_text, message))
    if request.path.endswith(":streamGenerateContent"):
        chunks = stream_chunks(s, model, vertex=vertex, pieces=stream_options.pop("pieces", 3))
        broken_after = stream_options.pop("broken_after", None)
        if broken_after is not None:
            return broken_sse([(None, c) for c in chunks], broken_after)
        return FakeResponse(sse=[(None, c) for c in chunks], **stream_options)
    return FakeResponse(json=response_json(s, model, vertex=vertex))


def scenario(name_or_scenario: str | Scenario, **stream_options: Any):
    """A handler to ``enqueue``: answers the next request (unary or streamed) with that scenario.

    ``stream_options`` go to the streamed ``FakeResponse`` (``abort_after``, ``chunk_delay``, ``pieces``);
    ``broken_after=N`` cuts a chunked stream after N events (a protocol error mid-stream).
    """
    s = SCENARIOS[name_or_scenario] if isinstance(name_or_scenario, str) else name_or_scenario

    def handler(request: FakeRequest) -> FakeResponse:
        request.match = re.fullmatch(_MODEL_PATH + r":(?:generateContent|streamGenerateContent)", request.path)
        return answer(s, request, **dict(stream_options))

    return handler


def _default(request: FakeRequest) -> FakeResponse:
    # A prompt containing "scenario:NAME" picks a fixture, so demos need no scripting.
    found = _MARKER.search(request.body.decode(errors="replace"))
    return answer(SCENARIOS.get(found.group(1) if found else "basic", SCENARIOS["basic"]), request)


def embed_tokens(text: str) -> int:
    """The fake tokenizer of the embedding routes: one token per 4 characters, at least 1."""
    return max(1, len(text) // 4)


def _texts(value: Any) -> list[str]:
    """Every ``text`` string in a request fragment, in order."""
    if isinstance(value, dict):
        return [value["text"]] if isinstance(value.get("text"), str) else [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def _embed(request: FakeRequest) -> FakeResponse:
    """``batchEmbedContents`` (Gemini API, Vertex), ``embedContent`` (Vertex gemini models) and
    ``predict`` (Vertex text-embedding models, with per-embedding statistics and float counts)."""
    body = request.json or {}
    vector = [0.01, 0.02, 0.03]
    if request.path.endswith(":predict"):
        instances = body.get("instances") or []
        predictions = [
            {"embeddings": {"values": vector, "statistics": {"token_count": float(embed_tokens(i.get("content", ""))),
                                                              "truncated": False}}}
            for i in instances
        ]
        chars = sum(len(i.get("content", "")) for i in instances)
        return FakeResponse(json={"predictions": predictions, "metadata": {"billableCharacterCount": chars}})
    if request.path.endswith(":embedContent"):
        tokens = sum(embed_tokens(t) for t in _texts(body.get("content")))
        return FakeResponse(json={"embedding": {"values": vector}, "truncated": False,
                                  "usageMetadata": {"promptTokenCount": tokens, "totalTokenCount": tokens}})
    requests = body.get("requests") or []
    tokens = sum(embed_tokens(t) for r in requests for t in _texts(r.get("content")))
    return FakeResponse(json={"embeddings": [{"values": vector} for _ in requests],
                              "usageMetadata": {"promptTokenCount": tokens, "totalTokenCount": tokens}})


def _count_tokens(request: FakeRequest) -> FakeResponse:
    return FakeResponse(json={"totalTokens": max(1, len(request.body) // 4)})


def register(server: FakeProviderServer) -> None:
    server.route("POST", _MODEL_PATH + r":generateContent", _default)
    server.route("POST", _MODEL_PATH + r":streamGenerateContent", _default)
    server.route("POST", _MODEL_PATH + r":countTokens", _count_tokens)
    server.route("POST", _MODEL_PATH + r":(?:batchEmbedContents|embedContent|predict)", _embed)


__all__ = ["SCENARIOS", "Scenario", "answer", "broken_sse", "embed_tokens", "error_json", "register", "response_json", "scenario", "stream_chunks", "usage_metadata"]

