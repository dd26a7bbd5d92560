"""Message content in the GenAI semconv shape (``role`` + ``parts``), for the opt-in capture.

Only called when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``; by default no
prompt or answer text ever reaches a span.
"""

from __future__ import annotations

from typing import Any

from tokentrail.instrumentation.fields import field, items


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, (list, tuple)):
        parts = []
        for part in content:
            text = field(part, "text")
            if isinstance(text, str):
                parts.append({"type": "text", "content": text})
            else:
                parts.append({"type": str(field(part, "type") or "unknown")})  # images etc.: no payload
        return parts
    return [{"type": "text", "content": str(content)}]


def _tool_calls(message: Any) -> list[dict[str, Any]]:
    calls = []
    for call in items(message, "tool_calls"):
        function = field(call, "function")
        calls.append({"type": "tool_call", "id": field(call, "id"), "name": field(function, "name"),
                      "arguments": field(function, "arguments")})
    return calls


def chat_input(messages: Any) -> list[dict[str, Any]]:
    out = []
    for message in messages if isinstance(messages, (list, tuple)) else ():
        out.append({"role": field(message, "role"), "parts": _parts(field(message, "content")) + _tool_calls(message)})
    return out


def chat_output(completion: Any) -> list[dict[str, Any]]:
    out = []
    for choice in items(completion, "choices"):
        message = field(choice, "message")
        out.append({"role": "assistant", "parts": _parts(field(message, "content")) + _tool_calls(message),
                    "finish_reason": field(choice, "finish_reason")})
    return out


def responses_input(kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    instructions = kwargs.get("instructions")
    if isinstance(instructions, str):
        out.append({"role": "system", "parts": _parts(instructions)})
    value = kwargs.get("input")
    if isinstance(value, str):
        out.append({"role": "user", "parts": _parts(value)})
    elif isinstance(value, (list, tuple)):
        for item in value:
            out.append({"role": field(item, "role") or field(item, "type"), "parts": _parts(field(item, "content"))})
    return out


def responses_output(response: Any) -> list[dict[str, Any]]:
    out = []
    for item in items(response, "output"):
        if field(item, "type") == "message":
            out.append({"role": "assistant", "parts": _parts(field(item, "content"))})
        elif field(item, "type") == "function_call":
            out.append({"role": "assistant", "parts": [{"type": "tool_call", "id": field(item, "call_id"),
                                                         "name": field(item, "name"),
                                                         "arguments": field(item, "arguments")}]})
    return out
