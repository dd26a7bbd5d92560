"""Fake Anthropic Messages API (first-party and Vertex AI paths): exact JSON and SSE shapes.

Shapes follow the anthropic SDK's types (``Message``, ``Usage``, ``RawMessageStreamEvent``,
``MessageTokensCount``, ``MessageBatch``, ``MessageBatchIndividualResponse``). Builders are
public so tests script exact usage: ``server.enqueue(FakeResponse(json=message(...)))`` or
``FakeResponse(sse=message_events(...))``; both built from the same arguments report the
same usage, split across ``message_start`` and ``message_delta`` the way the API does.
"""

from __future__ import annotations

import itertools
import json
from typing import Any
from urllib.parse import unquote

from tokentrail.testing.server import FakeProviderServer, FakeRequest, FakeResponse

DEFAULT_MODEL = "claude-sonnet-4-20250514"
# The worked example: 8,000 in / 1,200 out on Claude Sonnet 4 costs $0.042.
DEFAULT_USAGE: dict[str, Any] = {"input_tokens": 8000, "output_tokens": 1200}
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_01Fake{next(_ids):018d}"


def usage_block(
    input_tokens: int = 0,
    output_tokens: int = 0,
    *,
    cache_read_input_tokens: int = 0,
    cache_creation_5m: int = 0,
    cache_creation_1h: int = 0,
    web_search_requests: int = 0,
    thinking_tokens: int | None = None,
    service_tier: str = "standard",
) -> dict[str, Any]:
    """A ``Usage`` as the API sends it: ``input_tokens`` excludes both cache parts."""
    block: dict[str, Any] = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_creation_5m + cache_creation_1h,
        "cache_read_input_tokens": cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache_creation_5m,
            "ephemeral_1h_input_tokens": cache_creation_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": service_tier,
        "server_tool_use": {"web_search_requests": web_search_requests, "web_fetch_requests": 0}
        if web_search_requests
        else None,
        "inference_geo": "global",
    }
    if thinking_tokens is not None:
        block["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
    return block


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "citations": None}


def tool_use_block(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": _id("toolu"), "name": name, "input": arguments, "caller": None}


def web_search_blocks(query: str) -> list[dict[str, Any]]:
    """A server-side web search: the tool call and its (encrypted) results."""
    call_id = _id("srvtoolu")
    return [
        {"type": "server_tool_use", "id": call_id, "name": "web_search", "input": {"query": query}, "caller": None},
        {
            "type": "web_search_tool_result",
            "tool_use_id": call_id,
            "caller": None,
            "content": [
                {
                    "type": "web_search_result",
                    "url": "https://example.com/answer",
                    "title": "An answer",
                    "encrypted_content": "ZmFrZQ==",
                    "page_age": None,
                }
            ],
        },
    ]


def message(
    *,
    model: str = DEFAULT_MODEL,
    usage: dict[str, Any] | None = None,
    content: list[dict[str, Any]] | None = None,
    stop_reason: str = "end_turn",
    message_id: str | None = None,
) -> dict[str, Any]:
    """A complete ``Message`` body."""
    return {
        "id": message_id or _id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content if content is not None else [text_block("Hello from the fake Claude.")],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "stop_details": None,
        "container": None,
        "usage": usage if usage is not None else usage_block(**DEFAULT_USAGE),
    }


def message_events(
    *,
    model: str = DEFAULT_MODEL,
    usage: dict[str, Any] | None = None,
    content: list[dict[str, Any]] | None = None,
    stop_reason: str = "end_turn",
    message_id: str | None = None,
    error: dict[str, Any] | None = None,
    text_pieces: int = 2,
) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events of the same message streamed.

    ``message_start`` carries the input side with a placeholder ``output_tokens`` of 1;
    ``message_delta`` carries cumulative output and repeats the cumulative input/cache
    counts, as the API does. ``error`` (an ``{"type", "message"}`` dict) is sent as an
    ``error`` event in place of ``message_delta``/``message_stop``, like a mid-stream overload.
    """
    full = message(model=model, usage=usage, content=content, stop_reason=stop_reason, message_id=message_id)
    final_usage = full["usage"]
    start_usage = {**final_usage, "output_tokens": 1}
    start_usage.pop("output_tokens_details", None)
    start_usage["server_tool_use"] = None
    start = {**full, "content": [], "stop_reason": None, "usage": start_usage}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(full["content"]):
        events.extend(_block_events(index, block, text_pieces))
        if index == 0:
            events.append(("ping", {"type": "ping"}))
    if error is not None:
        events.append(("error", {"type": "error", "error": error}))
        return events
    delta_usage = {
        name: final_usage.get(name)
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    }
    delta_usage["server_tool_use"] = final_usage.get("server_tool_use")
    if "output_tokens_details" in final_usage:
        delta_usage["output_tokens_details"] = final_usage["output_tokens_details"]
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None, "stop_details": None, "container": None},
                "usage": delta_usage,
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _split(text: str, pieces: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _block_events(index: int, block: dict[str, Any], pieces: int = 2) -> list[tuple[str, dict[str, Any]]]:
    kind = block["type"]
    events: list[tuple[str, dict[str, Any]]] = []
    if kind == "text":
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": {**block, "text": ""}}))
        for piece in _split(block["text"], pieces):
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": {"type": "text_delta", "text": piece}}))
    elif kind in ("tool_use", "server_tool_use"):
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": {**block, "input": {}}}))
        events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                               "delta": {"type": "input_json_delta",
                                                         "partial_json": json.dumps(block["input"])}}))
    else:  # results blocks arrive whole
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def error(status: int, error_type: str, text: str = "fake error") -> FakeResponse:
    """An API error response (``rate_limit_error`` 429, ``overloaded_error`` 529, ...)."""
    return FakeResponse(
        status=status,
        json={"type": "error", "error": {"type": error_type, "message": text}, "request_id": _id("req")},
        headers={"request-id": _id("req")},
    )


# A request header asking for a streamed answer in that many text deltas (benchmarks).
DELTAS_HEADER = "x-fake-text-deltas"


def _deltas(headers: dict[str, str]) -> int:
    raw = headers.get(DELTAS_HEADER, "")
    return int(raw) if raw.isdigit() and 0 < int(raw) <= 10_000 else 2


def response_for(body: dict[str, Any], *, model: str | None = None, stream: bool | None = None,
                 deltas: int = 2) -> FakeResponse:
    """The default answer to a Messages request: DEFAULT_USAGE, one text block."""
    model = model or body.get("model") or DEFAULT_MODEL
    streamed = body.get("stream") if stream is None else stream
    if streamed:
        content = [text_block("token " * deltas)] if deltas != 2 else None
        return FakeResponse(sse=message_events(model=model, content=content, text_pieces=deltas),
                            headers={"request-id": _id("req")})
    return FakeResponse(json=message(model=model), headers={"request-id": _id("req")})


# --- routes -----------------------------------------------------------------------------
def _messages(request: FakeRequest) -> FakeResponse:
    return response_for(request.json or {}, deltas=_deltas(request.headers))


def _count_tokens(request: FakeRequest) -> FakeResponse:
    body = request.json or {}
    chars = len(json.dumps(body.get("messages", []))) + len(json.dumps(body.get("system", "")))
    return FakeResponse(json={"input_tokens": chars // 4 + 1})


def _vertex_predict(request: FakeRequest) -> FakeResponse:
    model = unquote(request.match.group("model"))
    return response_for(request.json or {}, model=model, stream=request.match.group("verb") == "streamRawPredict")


class _Batches:
    """Message Batches that end immediately; each request succeeds with DEFAULT_USAGE at batch tier."""

    def __init__(self) -> None:
        self.batches: dict[str, dict[str, Any]] = {}

    def _batch(self, batch_id: str, request: FakeRequest) -> dict[str, Any]:
        stored = self.batches[batch_id]
        count = len(stored["requests"])
        host = request.headers.get("host", "127.0.0.1")
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": count, "errored": 0, "canceled": 0, "expired": 0},
            "created_at": "2026-01-01T00:00:00Z",
            "ended_at": "2026-01-01T00:10:00Z",
            "expires_at": "2026-01-02T00:00:00Z",
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"http://{host}/v1/messages/batches/{batch_id}/results",
        }

    def create(self, request: FakeRequest) -> FakeResponse:
        batch_id = _id("msgbatch")
        self.batches[batch_id] = {"requests": (request.json or {}).get("requests", [])}
        return FakeResponse(json=self._batch(batch_id, request))

    def retrieve(self, request: FakeRequest) -> FakeResponse:
        batch_id = request.match.group("id")
        if batch_id not in self.batches:
            return error(404, "not_found_error", f"no batch {batch_id}")
        return FakeResponse(json=self._batch(batch_id, request))

    def results(self, request: FakeRequest) -> FakeResponse:
        stored = self.batches.get(request.match.group("id"))
        if stored is None:
            return error(404, "not_found_error", "no such batch")
        lines = []
        for index, item in enumerate(stored["requests"]):
            params = item.get("params", {})
            usage = usage_block(**DEFAULT_USAGE, service_tier="batch")
            # results are stored: reading them again gives the same messages
            message_id = f"msg_{request.match.group('id')[-12:]}_{index:04d}"
            result = {"type": "succeeded", "message": message(model=params.get("model", DEFAULT_MODEL), usage=usage,
                                                              message_id=message_id)}
            lines.append(json.dumps({"custom_id": item.get("custom_id"), "result": result}).encode() + b"\n")
        return FakeResponse(body=iter(lines), content_type="application/binary")


def register(server: FakeProviderServer) -> None:
    batches = _Batches()
    server.route("POST", r"/v1/messages", _messages)
    server.route("POST", r"/v1/messages/count_tokens", _count_tokens)
    server.route("POST", r"/v1/messages/batches", batches.create)
    server.route("GET", r"/v1/messages/batches/(?P<id>[^/]+)", batches.retrieve)
    server.route("GET", r"/v1/messages/batches/(?P<id>[^/]+)/results", batches.results)
    # Vertex AI: {base}/projects/{p}/locations/{r}/publishers/anthropic/models/{model}:{verb}
    server.route(
        "POST",
        r"(?:/v1)?/projects/[^/]+/locations/[^/]+/publishers/anthropic/models/count-tokens:rawPredict",
        _count_tokens,
    )
    server.route(
        "POST",
        r"(?:/v1)?/projects/[^/]+/locations/[^/]+/publishers/anthropic/models/(?P<model>[^/:]+)"
        r":(?P<verb>rawPredict|streamRawPredict)",
        _vertex_predict,
    )
