"""Stream hooks for openai-SDK streams (Chat Completions chunks, Responses events).

``on_item`` runs once per chunk: it only keeps references and never builds attributes;
everything is translated once, in ``record()``, when the stream ends.
"""

from __future__ import annotations

from typing import Any

from tokentrail.instrumentation.genai_span import capture_content
from tokentrail.instrumentation.openai import content
from tokentrail.instrumentation.openai import usage as openai_usage
from tokentrail.instrumentation.streams import LLMCallStreamHooks

_RESPONSE_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ChatStreamHooks(LLMCallStreamHooks):
    """Collects id/model/finish reasons/usage from ``ChatCompletionChunk``s.

    When the instrumentation injected ``stream_options.include_usage``, the extra final
    chunk (``choices == []`` with ``usage``) is hidden from the caller.
    """

    __slots__ = ("hide_usage_chunk", "usage", "model", "response_id", "service_tier", "finish", "finished")

    def __init__(self, call: Any, hide_usage_chunk: bool) -> None:
        super().__init__(call)
        self.hide_usage_chunk = hide_usage_chunk
        self.usage: Any = None
        self.model: Any = None
        self.response_id: Any = None
        self.service_tier: Any = None
        self.finish: dict[int, str] = {}
        self.finished = False

    def on_item(self, chunk: Any) -> bool:
        choices = chunk.choices
        if not self.model:  # Azure's first chunk (prompt filter results) has an empty model
            self.model = chunk.model
            self.response_id = chunk.id
            self.service_tier = getattr(chunk, "service_tier", None)  # absent on legacy completions
        if choices:
            # hot path: one content delta, not the last
            if choices[0].finish_reason is None and len(choices) == 1:
                return False
            usage = chunk.usage
            for choice in choices:
                reason = choice.finish_reason
                if reason is not None:
                    self.finish[choice.index] = reason
                    self.finished = True
                    if usage is None:
                        usage = _groq_usage(chunk)
            if usage is not None:  # some compatible APIs put usage on the last content chunk
                self.usage = usage
            return False
        usage = chunk.usage
        if usage is not None:
            self.usage = usage
            tier = getattr(chunk, "service_tier", None)
            if tier is not None:
                self.service_tier = tier
            return self.hide_usage_chunk
        return False

    def drain_before_close(self) -> bool:
        # The caller stopped right after the final content chunk: the usage chunk is next.
        return self.finished and self.usage is None and self.hide_usage_chunk

    def record(self) -> None:
        call = self.call
        call.set_response(
            model=self.model,
            response_id=self.response_id,
            finish_reasons=[self.finish[i] for i in sorted(self.finish)],
            service_tier=self.service_tier,
        )
        call.set_usage(openai_usage.chat_usage(self.usage))


class CapturingChatStreamHooks(ChatStreamHooks):
    """ChatStreamHooks that also collect the answer text (only when content capture is on)."""

    __slots__ = ("texts",)

    def __init__(self, call: Any, hide_usage_chunk: bool) -> None:
        super().__init__(call, hide_usage_chunk)
        self.texts: dict[int, list[str]] = {}

    def on_item(self, chunk: Any) -> bool:
        for choice in chunk.choices or ():
            text = choice.delta.content if choice.delta is not None else None
            if text:
                self.texts.setdefault(choice.index, []).append(text)
        return super().on_item(chunk)

    def record(self) -> None:
        super().record()
        self.call.capture_messages(output_messages=[
            {"role": "assistant", "parts": [{"type": "text", "content": "".join(self.texts[i])}],
             "finish_reason": self.finish.get(i)}
            for i in sorted(self.texts)
        ])


def _groq_usage(chunk: Any) -> Any:
    """Groq reports streamed usage in ``x_groq.usage`` on the final chunk."""
    return openai_usage.field(openai_usage.field(chunk, "x_groq"), "usage")


class ResponsesStreamHooks(LLMCallStreamHooks):
    """Collects the final ``Response`` from Responses API stream events."""

    __slots__ = ("response", "error_code")

    def __init__(self, call: Any) -> None:
        super().__init__(call)
        self.response: Any = None
        self.error_code: Any = None

    def on_item(self, event: Any) -> bool:
        kind = event.type
        if kind in _RESPONSE_TERMINAL or (kind == "response.created" and self.response is None):
            self.response = event.response
        elif kind == "error":
            self.error_code = getattr(event, "code", None) or "error"
        return False

    def record(self) -> None:
        record_response(self.call, self.response)
        if self.error_code is not None:
            self.call.set_error(str(self.error_code))


def record_response(call: Any, response: Any) -> None:
    """Copy a Responses API ``Response`` (object or dict) onto the call."""
    if response is None:
        return
    field = openai_usage.field
    status = field(response, "status")
    call.set_response(
        model=field(response, "model"),
        response_id=field(response, "id"),
        finish_reasons=[status] if isinstance(status, str) else None,
        service_tier=field(response, "service_tier"),
    )
    call.set_usage(openai_usage.responses_usage(response))
    if capture_content():
        call.capture_messages(output_messages=content.responses_output(response))
    if status == "failed":
        error = field(response, "error")
        call.set_error(str(field(error, "code") or "failed"))


def record_chat(call: Any, completion: Any) -> None:
    """Copy a ``ChatCompletion`` (object or dict) onto the call."""
    field = openai_usage.field
    choices = field(completion, "choices") or ()
    call.set_response(
        model=field(completion, "model"),
        response_id=field(completion, "id"),
        finish_reasons=[r for r in (field(c, "finish_reason") for c in choices) if isinstance(r, str)],
        service_tier=field(completion, "service_tier"),
    )
    call.set_usage(openai_usage.chat_usage(field(completion, "usage")))
    if capture_content():
        call.capture_messages(output_messages=content.chat_output(completion))


def record_embeddings(call: Any, result: Any) -> None:
    field = openai_usage.field
    call.set_response(model=field(result, "model"))
    call.set_usage(openai_usage.embeddings_usage(field(result, "usage")))
