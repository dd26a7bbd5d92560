"""Fake OpenAI API: Chat Completions (JSON and SSE), Responses (JSON and the Responses SSE
event stream), Embeddings and legacy text Completions, with OpenAI's error JSON.

Shapes follow the openai SDK's types (``ChatCompletion``, ``ChatCompletionChunk``,
``CompletionUsage`` with ``prompt_tokens_details.cached_tokens`` and
``completion_tokens_details.reasoning_tokens``, ``Response`` / ``ResponseUsage`` /
``ResponseStreamEvent``, ``CreateEmbeddingResponse``). A streamed chat call sends
``usage`` only when the request asks for ``stream_options.include_usage``, in a final chunk
with ``choices: []``, exactly as the real API does.

Routes match any path prefix (``.../chat/completions``), so one server also plays Azure
(``/openai/deployments/<name>/chat/completions``) and, on loopback, provider-prefixed base
URLs such as ``http://127.0.0.1:PORT/deepseek/v1`` (see ``base_url``).

Batch API: ``GET .../files/<id>/content`` serves a batch output file (``batch_output``).

Scripting one call (any of):
- ``server.enqueue(reply(prompt_tokens=2000, completion_tokens=500))`` - the next request,
  whatever its endpoint and stream flag, gets the matching shape with that usage;
- the request header ``x-fake-openai`` with a JSON object of ``reply`` arguments
  (``extra_headers={"x-fake-openai": json.dumps({...})}``);
- ``server.enqueue(error(429))`` - OpenAI's error JSON with that status;
- ``reply(fail_after=N)`` - a stream that fails after N events (chat: the in-stream error the
  SDK raises as ``APIError``; Responses: a ``response.failed`` event), ``reply(abort_after=N)``
  - a stream whose connection just ends after N events.
- ``reply(finish_reason="length")`` - a chat answer cut at max_tokens (billed: usage is sent);
  ``reply(incomplete_reason="max_output_tokens")`` - a Responses answer with status
  ``incomplete`` and its usage (a stream ends with ``response.incomplete``).
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from tokentrail.testing.server import FakeProviderServer, FakeRequest, FakeResponse

HEADER = "x-fake-openai"
CREATED = 1_763_800_000
FINGERPRINT = "fp_fake0001"


@dataclass(frozen=True)
class Reply:
    """What the fake answers. ``usage`` (a dict sent verbatim) overrides the token fields."""

    prompt_tokens: int = 20
    completion_tokens: int = 10
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    usage: Any = None
    omit_usage: bool = False
    content: str = "Hello from the fake provider."
    model: str | None = None  # response model; default: the request model
    service_tier: str | None = "default"
    finish_reason: str = "stop"
    web_searches: int = 0
    extra_usage: dict[str, Any] = field(default_factory=dict)  # e.g. DeepSeek's cache hit/miss
    status: int = 200
    error_type: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    chunk_count: int = 3  # content deltas in a stream
    abort_after: int | None = None  # close a stream after this many SSE events
    fail_after: int | None = None  # a stream reports a server error after this many events
    incomplete_reason: str | None = None  # Responses: status "incomplete" (e.g. "max_output_tokens"), still billed


def reply(**kwargs: Any) -> Callable[[FakeRequest], FakeResponse]:
    """A handler for ``server.enqueue``: answers whichever OpenAI endpoint was called."""
    scripted = Reply(**kwargs)
    return lambda request: _answer(request, scripted)


def error(
    status: int = 400,
    message: str | None = None,
    type: str | None = None,
    code: str | None = None,
) -> FakeResponse:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    default_type, default_code, default_message = _ERRORS.get(status, ("api_error", None, "Fake error."))
    return FakeResponse(
        status=status,
        json={
            "error": {
                "message": message or default_message,
                "type": type or default_type,
                "param": None,
                "code": code if code is not None else default_code,
            }
        },
        # keep SDK retries fast in tests (the SDK honours retry-after-ms)
        headers={"retry-after-ms": "5", "x-request-id": "req_fake_error"},
    )


_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def base_url(server: FakeProviderServer, provider: str = "openai") -> str:
    """Base URL for an openai-SDK client talking to ``provider`` through the fake server."""
    return f"{server.url}/{provider}/v1"


# --------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------
def chat_usage_json(r: Reply) -> Any:
    if r.usage is not None:
        return r.usage
    return {
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "total_tokens": r.prompt_tokens + r.completion_tokens,
        "prompt_tokens_details": {
            "cached_tokens": r.cached_tokens,
            "audio_tokens": 0,
            **({"cache_write_tokens": r.cache_write_tokens} if r.cache_write_tokens else {}),
        },
        "completion_tokens_details": {
            "reasoning_tokens": r.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
        **r.extra_usage,
    }


def chat_completion_json(r: Reply, model: str, completion_id: str = "chatcmpl-fake0001") -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": CREATED,
        "model": r.model or model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": r.content, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": r.finish_reason,
            }
        ],
        "service_tier": r.service_tier,
        "system_fingerprint": FINGERPRINT,
    }
    if not r.omit_usage:
        body["usage"] = chat_usage_json(r)
    return body


def _split(text: str, parts: int) -> list[str]:
    parts = max(1, parts)
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def chat_chunks(r: Reply, model: str, include_usage: bool, completion_id: str = "chatcmpl-fake0001") -> list[dict]:
    """The ``data:`` payloads of a streamed chat completion (without the final ``[DONE]``)."""

    def chunk(choices: list[dict], **extra: Any) -> dict[str, Any]:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": r.model or model,
            "service_tier": r.service_tier,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = None  # the real API sends usage: null on every chunk but the last
        body.update(extra)
        return body

    out = [chunk([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}, "logprobs": None, "finish_reason": None}])]
    for piece in _split(r.content, r.chunk_count):
        out.append(chunk([{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}]))
    out.append(chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": r.finish_reason}]))
    if include_usage and not r.omit_usage:
        out.append(chunk([], usage=chat_usage_json(r)))
    return out


def text_completion_json(r: Reply, model: str, completion_id: str = "cmpl-fake0001") -> dict[str, Any]:
    """The legacy ``/completions`` answer (``Completion``)."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "text_completion",
        "created": CREATED,
        "model": r.model or model,
        "choices": [{"text": r.content, "index": 0, "logprobs": None, "finish_reason": r.finish_reason}],
        "system_fingerprint": FINGERPRINT,
    }
    if not r.omit_usage:
        body["usage"] = chat_usage_json(r)
    return body


def text_completion_chunks(r: Reply, model: str, include_usage: bool) -> list[dict[str, Any]]:
    def chunk(choices: list[dict], **extra: Any) -> dict[str, Any]:
        body = {"id": "cmpl-fake0001", "object": "text_completion", "created": CREATED, "model": r.model or model,
                "choices": choices, "system_fingerprint": FINGERPRINT}
        if include_usage:
            body["usage"] = None
        body.update(extra)
        return body

    out = [chunk([{"text": piece, "index": 0, "logprobs": None, "finish_reason": None}])
           for piece in _split(r.content, r.chunk_count)]
    out.append(chunk([{"text": "", "index": 0, "logprobs": None, "finish_reason": r.finish_reason}]))
    if include_usage and not r.omit_usage:
        out.append(chunk([], usage=chat_usage_json(r)))
    return out


def responses_usage_json(r: Reply) -> Any:
    if r.usage is not None:
        return r.usage
    return {
        "input_tokens": r.prompt_tokens,
        "input_tokens_details": {"cached_tokens": r.cached_tokens, "cache_write_tokens": r.cache_write_tokens},
        "output_tokens": r.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": r.reasoning_tokens},
        "total_tokens": r.prompt_tokens + r.completion_tokens,
        **r.extra_usage,
    }


def _message_item(r: Reply, status: str = "completed") -> dict[str, Any]:
    return {
        "id": "msg_fake0001",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": r.content, "annotations": [], "logprobs": []}],
    }


def _item_status(r: Reply) -> str:
    return "incomplete" if r.incomplete_reason else "completed"


def _search_items(r: Reply) -> list[dict[str, Any]]:
    return [
        {"id": f"ws_fake{i:04d}", "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "fake"}}
        for i in range(r.web_searches)
    ]


def response_json(r: Reply, model: str, request: dict[str, Any] | None = None, *, status: str = "completed",
                  output: list[dict] | None = None, usage: bool = True) -> dict[str, Any]:
    request = request or {}
    if status == "completed" and r.incomplete_reason:
        status = "incomplete"
    body: dict[str, Any] = {
        "id": "resp_fake0001",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": r.incomplete_reason} if status == "incomplete" else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": r.model or model,
        "output": output if output is not None else [*_search_items(r), _message_item(r, _item_status(r))],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": r.service_tier,
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": responses_usage_json(r) if usage and not r.omit_usage else None,
        "user": None,
        "metadata": {},
    }
    if r.web_searches and usage:
        body["tool_usage"] = {
            "image_gen": {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
                          "output_tokens": 0, "total_tokens": 0},
            "web_search": {"num_requests": r.web_searches},
        }
    return body


def response_events(r: Reply, model: str, request: dict[str, Any] | None = None) -> list[tuple[str, dict]]:
    """The Responses API SSE stream: ``(event, data)`` pairs, ``data.type == event``."""
    events: list[tuple[str, dict]] = []

    def emit(kind: str, **data: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": len(events), **data}))

    in_progress = response_json(r, model, request, status="in_progress", output=[], usage=False)
    emit("response.created", response=in_progress)
    emit("response.in_progress", response=in_progress)
    searches = _search_items(r)
    for index, item in enumerate(searches):
        emit("response.output_item.added", output_index=index, item={**item, "status": "in_progress"})
        emit("response.output_item.done", output_index=index, item=item)
    index = len(searches)
    item_id = "msg_fake0001"
    emit("response.output_item.added", output_index=index, item={**_message_item(r, "in_progress"), "content": []})
    empty_part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    emit("response.content_part.added", item_id=item_id, output_index=index, content_index=0, part=empty_part)
    for piece in _split(r.content, r.chunk_count):
        emit("response.output_text.delta", item_id=item_id, output_index=index, content_index=0, delta=piece, logprobs=[])
    emit("response.output_text.done", item_id=item_id, output_index=index, content_index=0, text=r.content, logprobs=[])
    emit("response.content_part.done", item_id=item_id, output_index=index, content_index=0,
         part={**empty_part, "text": r.content})
    emit("response.output_item.done", output_index=index, item=_message_item(r, _item_status(r)))
    final = response_json(r, model, request)
    emit(f"response.{final['status']}", response=final)
    return events


def embeddings_json(r: Reply, model: str, inputs: int, encoding_format: str | None, dims: int = 8) -> dict[str, Any]:
    data = []
    for index in range(inputs):
        vector = [round(0.1 * (index + 1) + 0.01 * d, 4) for d in range(dims)]
        if encoding_format == "base64":
            embedding: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        else:
            embedding = vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = r.usage if r.usage is not None else {"prompt_tokens": r.prompt_tokens, "total_tokens": r.prompt_tokens}
    body: dict[str, Any] = {"object": "list", "data": data, "model": r.model or model}
    if not r.omit_usage:
        body["usage"] = usage
    return body


def batch_output(results: list[tuple[str, Reply, str]] | None = None) -> bytes:
    """A Batch API output file (JSONL): ``(custom_id, reply, model)`` per line; a reply with an
    error status becomes a failed line (``response.status_code`` and the error body)."""
    results = results if results is not None else [
        ("request-1", Reply(prompt_tokens=2000, completion_tokens=500), "gpt-4o-mini"),
        ("request-2", Reply(prompt_tokens=1000, completion_tokens=100), "gpt-4o-mini"),
        ("request-3", Reply(status=400), "gpt-4o-mini"),
    ]
    lines = []
    for index, (custom_id, r, model) in enumerate(results):
        if r.status >= 400:
            response = {"status_code": r.status, "request_id": f"req_batch{index}", "body": error(r.status).json}
        else:
            body = chat_completion_json(r, model, completion_id=f"chatcmpl-batch-{custom_id}")
            response = {"status_code": 200, "request_id": f"req_batch{index}", "body": body}
        lines.append(json.dumps({"id": f"batch_req_{index:04d}", "custom_id": custom_id, "response": response,
                                 "error": None}))
    return ("\n".join(lines) + "\n").encode()


def _file_content(request: FakeRequest) -> FakeResponse:
    return FakeResponse(body=batch_output(), content_type="application/octet-stream")


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------
def _scripted(request: FakeRequest, default: Reply) -> Reply:
    raw = request.headers.get(HEADER)
    if not raw:
        return default
    return replace(default, **json.loads(raw))


def _model(request: FakeRequest, body: dict[str, Any]) -> str:
    model = body.get("model")
    if isinstance(model, str):
        return model
    match = request.match
    if match is not None and "deployment" in match.groupdict() and match.group("deployment"):
        return match.group("deployment")
    return "gpt-4o-mini"


def _error_response(r: Reply) -> FakeResponse:
    response = error(r.status, r.error_message, r.error_type, r.error_code)
    return response


def _answer(request: FakeRequest, scripted: Reply | None = None) -> FakeResponse:
    r = _scripted(request, scripted or Reply())
    if r.status >= 400:
        return _error_response(r)
    body = request.json if request.body else {}
    body = body if isinstance(body, dict) else {}
    model = _model(request, body)
    path = request.path
    headers = {"x-request-id": "req_fake0001", "openai-processing-ms": "12"}
    if path.endswith("/embeddings"):
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        return FakeResponse(json=embeddings_json(r, model, count, body.get("encoding_format")), headers=headers)
    if path.endswith("/responses"):
        if body.get("stream"):
            events = response_events(r, model, body)
            if r.fail_after is not None:  # a failed response: billed usage so far, status failed
                kind, final = events[-1]
                failed = {**final["response"], "status": "failed",
                          "error": {"code": "server_error", "message": "The model failed mid-answer."}}
                events = events[: r.fail_after] + [("response.failed", {**final, "type": "response.failed",
                                                                         "response": failed})]
            return FakeResponse(sse=events, headers=headers, abort_after=r.abort_after)
        return FakeResponse(json=response_json(r, model, body), headers=headers)
    legacy = not path.endswith("/chat/completions")
    if body.get("stream"):
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
        chunks = text_completion_chunks(r, model, include_usage) if legacy else chat_chunks(r, model, include_usage)
        events: list[tuple[str | None, Any]] = [(None, c) for c in chunks]
        if r.fail_after is not None:  # the API's in-stream error: the SDK raises APIError
            events = events[: r.fail_after] + [(None, {"error": error(500).json["error"]})]
        else:
            events.append((None, "[DONE]"))
        return FakeResponse(sse=events, headers=headers, abort_after=r.abort_after)
    if legacy:
        return FakeResponse(json=text_completion_json(r, model), headers=headers)
    return FakeResponse(json=chat_completion_json(r, model), headers=headers)


def register(server: FakeProviderServer) -> None:
    """Serve the OpenAI endpoints under any path prefix (``/v1``, ``/<provider>/v1``, Azure)."""
    server.route("POST", r"(?:/.*)?/openai/deployments/(?P<deployment>[^/]+)/(?:chat/completions|embeddings|responses)", _answer)
    server.route("POST", r"(?:/.*)?/chat/completions", _answer)
    server.route("POST", r"(?:/.*)?/completions", _answer)  # legacy text completions
    server.route("POST", r"(?:/.*)?/responses", _answer)
    server.route("POST", r"(?:/.*)?/embeddings", _answer)
    server.route("GET", r"(?:/.*)?/files/(?P<file_id>[^/]+)/content", _file_content)


__all__ = [
    "HEADER",
    "Reply",
    "batch_output",
    "base_url",
    "chat_chunks",
    "chat_completion_json",
    "embeddings_json",
    "error",
    "register",
    "reply",
    "response_events",
    "response_json",
    "text_completion_chunks",
    "text_completion_json",
]
