"""Fake Mistral endpoints: ``/v1/chat/completions`` (JSON and SSE) and ``/v1/embeddings``.

Shapes follow the ``mistralai`` SDK's models (``ChatCompletionResponse``, ``CompletionEvent``
wrapping ``CompletionChunk``, ``EmbeddingResponse``, ``UsageInfo``). Prompt-cache hits are
reported as ``usage.prompt_tokens_details.cached_tokens`` (part of ``prompt_tokens``); a
streamed answer carries its usage on the last chunk only, then ``data: [DONE]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tokentrail.testing.server import FakeProviderServer, FakeRequest, FakeResponse


@dataclass(frozen=True)
class Scenario:
    prompt_tokens: int = 10
    completion_tokens: int = 6
    cached_tokens: int = 0
    text: str = "Bonjour from the fake Mistral."
    tool_call: dict[str, Any] | None = None
    finish_reason: str = "stop"
    error: tuple[int, dict[str, Any]] | None = None


SCENARIOS: dict[str, Scenario] = {
    "basic": Scenario(),
    "cache_hit": Scenario(prompt_tokens=12_000, cached_tokens=10_000, completion_tokens=300, text="Cached answer."),
    "long_context": Scenario(prompt_tokens=120_000, completion_tokens=800, text="Long answer."),
    "tool_call": Scenario(
        prompt_tokens=700, completion_tokens=25, text="", finish_reason="tool_calls",
        tool_call={"id": "call_fake1", "type": "function", "index": 0,
                   "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
    ),
    "error": Scenario(error=(429, {
        "object": "error", "message": "Requests rate limit exceeded", "type": "rate_limited", "param": None, "code": "1300",
    })),
    "server_error": Scenario(error=(500, {
        "object": "error", "message": "Internal server error", "type": "internal_server_error", "param": None, "code": "3000",
    })),
}

_MARKER = re.compile(r"scenario:(\w+)")


def usage_json(s: Scenario) -> dict:
    usage: dict[str, Any] = {
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": s.prompt_tokens + s.completion_tokens,
    }
    if s.cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": s.cached_tokens}
    return usage


def completion_json(s: Scenario, model: str, response_id: str = "cmpl-fake1") -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": s.text, "tool_calls": None, "prefix": False}
    if s.tool_call is not None:
        message["tool_calls"] = [s.tool_call]
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": s.finish_reason}],
        "usage": usage_json(s),
    }


def stream_chunks(s: Scenario, model: str, *, pieces: int = 3, response_id: str = "cmpl-fake1") -> list[dict]:
    text = s.text
    size = max(1, -(-len(text) // pieces)) if text else 1
    texts = [text[i : i + size] for i in range(0, len(text), size)]
    base = {"id": response_id, "object": "chat.completion.chunk", "created": 1_767_225_600, "model": model}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    for piece in texts:
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    last_delta: dict[str, Any] = {"content": ""}
    if s.tool_call is not None:
        last_delta = {"tool_calls": [s.tool_call]}
    chunks.append({
        **base,
        "choices": [{"index": 0, "delta": last_delta, "finish_reason": s.finish_reason}],
        "usage": usage_json(s),
    })
    return chunks


def embeddings_json(model: str, inputs: list[str], tokens_per_input: int = 8) -> dict:
    return {
        "id": "emb-fake1",
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "embedding": [0.1, 0.2, 0.3], "index": i} for i in range(len(inputs))],
        "usage": {"prompt_tokens": tokens_per_input * len(inputs), "completion_tokens": 0,
                  "total_tokens": tokens_per_input * len(inputs)},
    }


def answer(s: Scenario, request: FakeRequest, **stream_options: Any) -> FakeResponse:
    body = request.json or {}
    model = body.get("model") or "mistral-small-latest"
    if s.error is not None:
        status, payload = s.error
        return FakeResponse(status=status, json=payload)
    if body.get("stream"):
        chunks = stream_chunks(s, model, pieces=stream_options.pop("pieces", 3))
        events = [(None, c) for c in chunks] + [(None, "[DONE]")]
        broken_after = stream_options.pop("broken_after", None)
        if broken_after is not None:
            from tokentrail.testing.gemini_api import broken_sse

            return broken_sse(events, broken_after)
        return FakeResponse(sse=events, **stream_options)
    return FakeResponse(json=completion_json(s, model))


def scenario(name_or_scenario: str | Scenario, **stream_options: Any):
    """A handler to ``enqueue``: answers the next chat request (unary or streamed) with that scenario."""
    s = SCENARIOS[name_or_scenario] if isinstance(name_or_scenario, str) else name_or_scenario
    return lambda request: answer(s, request, **dict(stream_options))


def _chat(request: FakeRequest) -> FakeResponse:
    found = _MARKER.search(request.body.decode(errors="replace"))
    return answer(SCENARIOS.get(found.group(1) if found else "basic", SCENARIOS["basic"]), request)


def _embeddings(request: FakeRequest) -> FakeResponse:
    body = request.json or {}
    inputs = body.get("input") or []
    if isinstance(inputs, str):
        inputs = [inputs]
    return FakeResponse(json=embeddings_json(body.get("model") or "mistral-embed", inputs))


def register(server: FakeProviderServer) -> None:
    server.route("POST", r"/v1/chat/completions", _chat)
    server.route("POST", r"/v1/embeddings", _embeddings)


__all__ = ["SCENARIOS", "Scenario", "answer", "completion_json", "embeddings_json", "register", "scenario", "stream_chunks", "usage_json"]
