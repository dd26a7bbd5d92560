"""Results of openai-SDK calls: stream states (Chat Completions chunks, Responses events) and
the recording of parsed results (objects or dicts).

``add`` runs once per chunk: it only keeps references and never builds attributes;
everything is translated once, when the stream ends.
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Any

from tokentrail.instrumentation.fields import field, items, reader, validated
from tokentrail.instrumentation.openai import content
from tokentrail.instrumentation.openai import usage as openai_usage
from tokentrail.instrumentation.streams import StreamState

_log = logging.getLogger(__name__)

_RESPONSE_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ChatStreamState(StreamState):
    """Collects id/model/finish reasons/usage from ``ChatCompletionChunk``s.

    When the instrumentation injected ``stream_options.include_usage``, the extra final
    chunk it caused (``choices == []``, ``usage`` and nothing else) is hidden from the caller;
    a usage-only chunk carrying any other field (``moderation``, even null; a proxy's extra
    field) is shown.
    """

    __slots__ = ("hide_usage_chunk", "usage_block", "model", "response_id", "service_tier", "finish")

    def __init__(self, hide_usage_chunk: bool) -> None:
        self.hide_usage_chunk = hide_usage_chunk
        self.usage_block: Any = None
        self.model: Any = None
        self.response_id: Any = None
        self.service_tier: Any = None
        self.finish: dict[int, str] = {}

    def add(self, chunk: Any) -> bool:
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
                    if usage is None:  # Groq reports streamed usage in x_groq.usage on the final chunk
                        usage = field(field(chunk, "x_groq"), "usage")
            if usage is not None:  # some compatible APIs put usage on the last content chunk
                self.usage_block = usage
            return False
        usage = chunk.usage
        if usage is not None:
            self.usage_block = usage
            tier = getattr(chunk, "service_tier", None)
            if tier is not None:
                self.service_tier = tier
            return self.hide_usage_chunk and _only_usage(chunk)
        return False

    def response(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "response_id": self.response_id,
            "finish_reasons": [self.finish[i] for i in sorted(self.finish)],
            "service_tier": self.service_tier,
        }

    @validated  # chat_usage's
    def usage(self) -> Any:
        return openai_usage.chat_usage(self.usage_block)


# What the usage chunk that include_usage asks for has: any other field, even null, is the server's own.
_USAGE_CHUNK_FIELDS = frozenset({"id", "object", "created", "model", "choices", "usage", "service_tier",
                                 "system_fingerprint", "obfuscation"})


def _only_usage(chunk: Any) -> bool:
    """Whether a ``choices == []`` chunk carries nothing but the usage we asked for."""
    sent = getattr(chunk, "model_fields_set", None)
    if sent is None:
        return getattr(chunk, "moderation", None) is None and not getattr(chunk, "model_extra", None)
    return sent <= _USAGE_CHUNK_FIELDS and not getattr(chunk, "model_extra", None)


class CapturingChatStreamState(ChatStreamState):
    """ChatStreamState that also collects the answer text (only when content capture is on)."""

    __slots__ = ("texts",)

    def __init__(self, hide_usage_chunk: bool) -> None:
        super().__init__(hide_usage_chunk)
        self.texts: dict[int, list[str]] = {}

    def add(self, chunk: Any) -> bool:
        for choice in chunk.choices or ():
            text = choice.delta.content if choice.delta is not None else None
            if text:
                self.texts.setdefault(choice.index, []).append(text)
        return super().add(chunk)

    def output_messages(self) -> Any:
        return [{"role": "assistant", "parts": [{"type": "text", "content": "".join(self.texts[i])}],
                 "finish_reason": self.finish.get(i)} for i in sorted(self.texts)]


class ResponsesStreamState(StreamState):
    """Collects the final ``Response`` from Responses API stream events."""

    __slots__ = ("final", "error_code")

    def __init__(self) -> None:
        self.final: Any = None
        self.error_code: Any = None

    def add(self, event: Any) -> bool:
        kind = event.type
        if kind in _RESPONSE_TERMINAL or (kind == "response.created" and self.final is None):
            self.final = event.response
        elif kind == "error":
            self.error_code = getattr(event, "code", None) or "error"
        return False

    def response(self) -> dict[str, Any]:
        return response_facts(self.final) if self.final is not None else {}

    @validated  # responses_usage's
    def usage(self) -> Any:
        return openai_usage.responses_usage(self.final)

    def output_messages(self) -> Any:
        return content.responses_output(self.final) if self.final is not None else None

    def error(self) -> str | None:
        if self.error_code is not None:
            return str(self.error_code)
        return _response_error(self.final)


def response_facts(response: Any) -> dict[str, Any]:
    """``LLMCall.set_response`` arguments of a Responses API ``Response`` (object or dict)."""
    status = field(response, "status")
    return {
        "model": field(response, "model"),
        "response_id": field(response, "id"),
        "finish_reasons": [status] if isinstance(status, str) else None,
        "service_tier": field(response, "service_tier"),
    }


def _response_error(response: Any) -> str | None:
    if field(response, "status") != "failed":
        return None
    return str(field(field(response, "error"), "code") or "failed")


def record_response(call: Any, response: Any) -> None:
    """Copy a Responses API ``Response`` (object or dict) onto the call."""
    if response is None:
        return
    call.set_response(**response_facts(response))
    call.read_usage(openai_usage.responses_usage, response)
    if call.capture_content:
        call.capture_messages(output_messages=content.responses_output(response))
    error = _response_error(response)
    if error:
        call.set_error(error)


def record_chat(call: Any, completion: Any) -> None:
    """Copy a ``ChatCompletion`` (object or dict) onto the call."""
    get = reader(completion)
    call.set_response(
        model=get("model"),
        response_id=get("id"),
        finish_reasons=[r for r in (field(c, "finish_reason") for c in items(completion, "choices"))
                        if isinstance(r, str)],
        service_tier=get("service_tier"),
    )
    call.read_usage(openai_usage.chat_usage, get("usage"))
    if call.capture_content:
        call.capture_messages(output_messages=content.chat_output(completion))


def record_embeddings(call: Any, result: Any) -> None:
    call.set_response(model=field(result, "model"))
    call.read_usage(openai_usage.embeddings_usage, field(result, "usage"))


# Items read past a helper's parse error for the usage (chat: the usage chunk follows the
# finish chunk; more only with n > 1 choices still streaming); past them the call ends without.
_USAGE_READ_LIMIT = 64


def stream_helper_wrapper(instruments: Any) -> Any:
    """wrapt wrapper of ``ChatCompletionStream.__init__`` (and async): the SDK's stream helper
    accumulates every chunk into ``get_final_completion()``, so nothing is hidden from it.

    With a format to parse, the helper raises ``LengthFinishReasonError`` /
    ``ContentFilterFinishReasonError`` on the finish chunk of a cut answer, before the usage
    chunk that follows it: see ``_priced``."""
    from openai.lib._parsing import has_parseable_input

    def parses(kwargs: dict) -> bool:
        return has_parseable_input(response_format=kwargs.get("response_format"), input_tools=kwargs.get("input_tools"))

    return _helper_wrapper(parses)


def responses_helper_wrapper(instruments: Any) -> Any:
    """wrapt wrapper of ``ResponseStream.__init__`` (and async): with a ``text_format`` (or tools)
    the helper parses the terminal response and may raise on it (an answer cut at
    ``max_output_tokens``): see ``_priced``."""
    from openai._utils import is_given

    def parses(kwargs: dict) -> bool:
        return any(kwargs.get(k) is not None and is_given(kwargs.get(k)) for k in ("text_format", "input_tools"))

    return _helper_wrapper(parses)


def _helper_wrapper(parses: Any) -> Any:
    """The ``__init__`` wrapper of an SDK stream helper over our proxy (``raw_stream``): its usage
    chunk is shown to the helper; when ``parses(kwargs)``, its events go through ``_priced``."""

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        raw = kwargs.get("raw_stream")
        hooks = getattr(raw, "_self_hooks", None)
        try:
            state = getattr(hooks, "state", None)
            if isinstance(state, ChatStreamState):
                state.hide_usage_chunk = False
        except Exception:
            pass
        result = wrapped(*args, **kwargs)
        try:
            if isinstance(getattr(hooks, "state", None), StreamState) and parses(kwargs):
                iterator = instance._iterator
                priced = _priced_async if hasattr(iterator, "__anext__") else _priced
                instance._iterator = priced(iterator, raw, hooks.call)
        except Exception:
            _log.debug("tokentrail: observing the stream helper failed", exc_info=True)
        return result

    return wrapper


def _priced(iterator: Any, raw: Any, call: Any) -> Any:
    """The helper's events. Should the helper raise while our call is open (it failed to parse
    an answer the provider billed), the call takes ``error.type`` and the rest of ``raw`` is
    read for its usage (the call then ends priced); the caller gets the same exception."""
    try:
        yield from iterator
    except Exception as exc:
        if not call.ended:
            call.set_error(exc)
            try:
                for _item in islice(raw, _USAGE_READ_LIMIT):
                    pass
            except Exception:
                _log.debug("tokentrail: reading the usage after a parse error failed", exc_info=True)
            finally:
                _close(raw)
        raise


async def _priced_async(iterator: Any, raw: Any, call: Any) -> Any:
    try:
        async for event in iterator:
            yield event
    except Exception as exc:
        if not call.ended:
            call.set_error(exc)
            try:
                read = 0
                async for _item in raw:
                    read += 1
                    if read >= _USAGE_READ_LIMIT:
                        break
            except Exception:
                _log.debug("tokentrail: reading the usage after a parse error failed", exc_info=True)
            finally:
                try:
                    await raw.close()
                except Exception:
                    _log.debug("tokentrail: closing the stream failed", exc_info=True)
        raise


def _close(raw: Any) -> None:
    try:
        raw.close()
    except Exception:
        _log.debug("tokentrail: closing the stream failed", exc_info=True)
