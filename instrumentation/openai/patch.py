"""wrapt wrappers around the openai SDK's resource methods.

Patched at the resource methods (``Completions.create``, ``.parse``, ``Responses.create``,
``.parse``, ``Embeddings.create`` and their async twins). ``with_raw_response`` and
``with_streaming_response`` call these same methods, so one span covers every surface;
``chat.completions.stream()`` and ``responses.stream()`` call ``create(stream=True)``.

Rules: our failures are swallowed (debug log) and the call goes through untouched; the
SDK's exceptions and return values reach the caller unchanged (streams are proxies that
pass ``isinstance``); only the pre-flight ``BudgetExceeded`` is ours to raise.

Billed errors: ``parse`` raises after a 200 the provider billed (``LengthFinishReasonError``,
``ContentFilterFinishReasonError``, a ``text_format`` failing on a Responses answer cut at
``max_output_tokens``). The answer is handed to ``_finish`` as a ``_Billed`` result (priced, with
``error.type``), then the same exception is raised again to the caller.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable

import wrapt

from tokentrail import preflight
from tokentrail.instrumentation import genai_span
from tokentrail.instrumentation.base import Instruments
from tokentrail.instrumentation.fields import prompt_chars
from tokentrail.instrumentation.openai import content, providers
from tokentrail.instrumentation.openai import streaming as results
from tokentrail.instrumentation.streams import AsyncStreamProxy, StateStreamHooks, SyncStreamProxy
from tokentrail.reconcile import keys as join_keys
from tokentrail.semconv import attributes as attr
from tokentrail.state import BoundedMemo, BoundedSet

_log = logging.getLogger(__name__)

INJECT_STREAM_USAGE_ENV = "TOKENTRAIL_OPENAI_INJECT_STREAM_USAGE"

CHAT = "chat"
COMPLETIONS = "completions"  # the legacy text completions API
RESPONSES = "responses"
EMBEDDINGS = "embeddings"

# GenAI semconv operation names per API surface
_OPERATION = {CHAT: "chat", COMPLETIONS: "text_completion", RESPONSES: "chat", EMBEDDINGS: "embeddings"}
_MAX_TOKENS_ARGS = {
    CHAT: ("max_completion_tokens", "max_tokens"),
    COMPLETIONS: ("max_tokens",),
    RESPONSES: ("max_output_tokens",),
    EMBEDDINGS: (),
}
# Providers whose streams always end with usage (and may not accept stream_options): no injection.
_USAGE_ALWAYS_STREAMED = frozenset({providers.MISTRAL})
# a little per message on top of the text, so the estimate stays generous
_PER_MESSAGE_TOKENS = 4
# Base URLs of strict OpenAI-compatible servers that rejected the injected stream_options.
_REJECTS_STREAM_OPTIONS: BoundedSet[str] = BoundedSet(1024)


@dataclass
class _Plan:
    kind: str
    provider: str
    server_address: str | None
    model: Any
    stream: bool
    max_tokens: int | None
    service_tier: str | None
    estimated_input_tokens: Callable[[], int]  # measured only when a pre-flight check applies
    kwargs: dict[str, Any]
    hide_usage_chunk: bool = False
    extra: dict[str, Any] = dc_field(default_factory=dict)
    base_url: str = ""
    server_port: int | None = None


def _materialise(kwargs: dict[str, Any], key: str) -> dict[str, Any]:
    """Turn a one-shot iterable argument (a generator of messages) into a list, so that we can
    read it and the SDK still sends every item; lists, strings and the like are left alone."""
    value = kwargs.get(key)
    if value is None or isinstance(value, (list, tuple, str, bytes, dict)):
        return kwargs
    if not hasattr(value, "__iter__") or not hasattr(value, "__next__"):
        return kwargs  # a re-iterable collection: reading it does not consume it
    return {**kwargs, key: list(value)}


def _estimate(kind: str, kwargs: dict[str, Any]) -> int:
    if kind == CHAT:
        messages = kwargs.get("messages")
        messages = messages if isinstance(messages, (list, tuple)) else []
        chars = prompt_chars((messages, kwargs.get("tools")))
        overhead = _PER_MESSAGE_TOKENS * len(messages)
    elif kind == RESPONSES:
        chars = prompt_chars((kwargs.get("input"), kwargs.get("instructions")))
        overhead = _PER_MESSAGE_TOKENS
    else:
        value = kwargs.get("prompt" if kind == COMPLETIONS else "input")
        if isinstance(value, list) and value and isinstance(value[0], int):
            return len(value)  # already tokens
        if isinstance(value, list) and value and isinstance(value[0], list):
            return sum(len(v) for v in value)
        chars, overhead = prompt_chars(value), 0
    return preflight.estimate_tokens(chars) + overhead


def _plan(instruments: Instruments, kind: str, instance: Any, kwargs: dict[str, Any]) -> _Plan:
    kwargs = _materialise(kwargs, {CHAT: "messages", COMPLETIONS: "prompt"}.get(kind, "input"))
    client = getattr(instance, "_client", None)
    # what the SDK's base_url property returns (OpenAI's does an import on every read)
    client_url = getattr(client, "_base_url", None) or getattr(client, "base_url", None)
    endpoint = providers.detect(client_url)
    stream = bool(kwargs.get("stream"))  # the SDK's own test (omit / NOT_GIVEN are falsy)
    max_tokens = None
    for name in _MAX_TOKENS_ARGS[kind]:
        value = kwargs.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            max_tokens = value
            break
    tier = kwargs.get("service_tier")
    # the text of the client's URL, as str() gives it (remembered per URL object)
    base_url = genai_span.url_text(client_url) if client_url is not None else str(getattr(client, "base_url", ""))
    plan = _Plan(
        kind=kind,
        provider=endpoint.provider,
        server_address=endpoint.server_address,
        server_port=endpoint.server_port,
        model=kwargs.get("model"),
        stream=stream,
        max_tokens=max_tokens,
        service_tier=tier if isinstance(tier, str) and tier != "auto" else None,
        estimated_input_tokens=lambda: _estimate(kind, kwargs),
        kwargs=kwargs,
        base_url=base_url,
    )
    plan.extra.update(join_keys.openai(client))  # what the provider's bill groups by
    if kind == RESPONSES:
        conversation = kwargs.get("conversation")
        conversation = conversation.get("id") if isinstance(conversation, dict) else conversation
        if isinstance(conversation, str) and conversation:
            plan.extra[attr.GEN_AI_CONVERSATION_ID] = conversation
    if (
        kind in (CHAT, COMPLETIONS)
        and stream
        and endpoint.provider not in _USAGE_ALWAYS_STREAMED
        and instruments.switches.get(INJECT_STREAM_USAGE_ENV, True)
        and base_url not in _REJECTS_STREAM_OPTIONS
    ):
        options = kwargs.get("stream_options")
        if not isinstance(options, dict) or "include_usage" not in options:
            base = options if isinstance(options, dict) else {}
            plan.kwargs = {**kwargs, "stream_options": {**base, "include_usage": True}}
            plan.hide_usage_chunk = True
    return plan


def _begin(kind: str) -> genai_span.Begin:
    def begin(instruments: Instruments, instance: Any, args: tuple, kwargs: dict) -> genai_span.Begun:
        plan = _plan(instruments, kind, instance, kwargs)
        call = genai_span.start_llm_call(
            instruments,
            provider=plan.provider,
            operation=_OPERATION[kind],
            request_model=plan.model if isinstance(plan.model, str) else None,
            server_address=plan.server_address,
            server_port=plan.server_port,
            max_tokens=plan.max_tokens,
            stream=plan.stream if kind != EMBEDDINGS else None,
            service_tier=plan.service_tier,
            estimated_input_tokens=plan.estimated_input_tokens,
            attributes=plan.extra or None,
            choices=plan.kwargs.get("n"),  # chat and completions: n answers, each billed its output
        )
        if kind in (CHAT, RESPONSES) and call.capture_content:
            try:
                messages = content.chat_input(plan.kwargs.get("messages")) if kind == CHAT else content.responses_input(plan.kwargs)
                call.capture_messages(input_messages=messages)
            except Exception:
                _log.debug("tokentrail: capturing the prompt failed", exc_info=True)
        return genai_span.Begun(call, plan.kwargs, plan)

    return begin


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
def _sdk_types(_: str) -> dict[str, Any]:
    from openai import AsyncStream, ContentFilterFinishReasonError, LengthFinishReasonError, Stream
    from openai._legacy_response import LegacyAPIResponse
    from openai._response import APIResponse, AsyncAPIResponse

    return {
        "stream": Stream,
        "async_stream": AsyncStream,
        "legacy": LegacyAPIResponse,
        "api_response": APIResponse,
        "async_api_response": AsyncAPIResponse,
        "finish_reason_errors": (LengthFinishReasonError, ContentFilterFinishReasonError),
    }


_TYPES: BoundedMemo[str, dict[str, Any]] = BoundedMemo(1)


def _types() -> dict[str, Any]:
    return _TYPES.get("openai", _sdk_types)


def _record_parsed(call: genai_span.LLMCall, kind: str, parsed: Any) -> None:
    if kind in (CHAT, COMPLETIONS):
        results.record_chat(call, parsed)
    elif kind == RESPONSES:
        results.record_response(call, parsed)
    else:
        results.record_embeddings(call, parsed)


def _stream_hooks(call: genai_span.LLMCall, plan: _Plan) -> StateStreamHooks:
    # sent without the injection after a rejection: every usage chunk is the server's own
    hide = plan.hide_usage_chunk and plan.base_url not in _REJECTS_STREAM_OPTIONS
    if plan.kind == CHAT and call.capture_content:
        state: Any = results.CapturingChatStreamState(hide)
    elif plan.kind in (CHAT, COMPLETIONS):  # legacy completions: same chunk shape, text instead of delta
        state = results.ChatStreamState(hide)
    else:
        state = results.ResponsesStreamState()
    return StateStreamHooks(call, state)


def _wrap_stream(call: genai_span.LLMCall, plan: _Plan, stream: Any) -> Any:
    types = _types()
    if isinstance(stream, types["async_stream"]):
        return AsyncStreamProxy(stream, _stream_hooks(call, plan))
    return SyncStreamProxy(stream, _stream_hooks(call, plan))


def _finish(call: genai_span.LLMCall, plan: _Plan, result: Any) -> Any:
    """Attach the result to the span; return what the caller gets (the result or a proxy)."""
    types = _types()
    if isinstance(result, (types["stream"], types["async_stream"])):
        return _wrap_stream(call, plan, result)
    if isinstance(result, types["legacy"]):
        return _handle_legacy_raw(call, plan, result)
    if isinstance(result, (types["api_response"], types["async_api_response"])):
        return _handle_streamed_raw(call, plan, result)
    if type(result) is _Billed:
        _record_parsed(call, plan.kind, result.answer)
        call.end(error=result.error)
        return result
    _record_parsed(call, plan.kind, result)
    call.end()
    return result


def _handle_legacy_raw(call: genai_span.LLMCall, plan: _Plan, raw: Any) -> Any:
    """``with_raw_response``: the body is already read unless it is an SSE stream."""
    if getattr(raw, "_stream", False):
        # Build the SDK's stream now and leave our proxy in the response's parse cache, so
        # the caller's ``raw.parse()`` returns it.
        parsed = raw.parse()
        wrapped = _wrap_stream(call, plan, parsed)
        raw._parsed_by_type[raw._cast_to] = wrapped
        return raw
    _record_parsed(call, plan.kind, raw.http_response.json())
    call.end()
    return raw


def _handle_streamed_raw(call: genai_span.LLMCall, plan: _Plan, raw: Any) -> Any:
    """``with_streaming_response``: nothing is read yet; observe the caller's ``parse()``."""
    if getattr(raw, "_is_sse_stream", False) or getattr(raw, "_stream", False):
        is_async = isinstance(raw, _types()["async_api_response"])
        if not is_async:
            parsed = raw.parse()
            raw._parsed_by_type[raw._cast_to] = _wrap_stream(call, plan, parsed)
            return raw
    proxy_cls = _AsyncRawProxy if isinstance(raw, _types()["async_api_response"]) else _SyncRawProxy
    return proxy_cls(raw, call, plan)


class _SyncRawProxy(wrapt.ObjectProxy):
    """An ``APIResponse`` whose ``parse()`` result is recorded; ends the span on close/GC."""

    def __init__(self, wrapped: Any, call: genai_span.LLMCall, plan: _Plan) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_plan = plan

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_parsed(self.__wrapped__.parse(*args, **kwargs), bool(args or kwargs))

    def _self_parsed(self, parsed: Any, cast: bool) -> Any:
        """Record what ``parse()`` (no cast arguments) returned: a stream is proxied."""
        try:
            if not self._self_call.ended and not cast:
                if isinstance(parsed, (_types()["stream"], _types()["async_stream"])):
                    wrapped = _wrap_stream(self._self_call, self._self_plan, parsed)
                    self.__wrapped__._parsed_by_type[self.__wrapped__._cast_to] = wrapped
                    return wrapped
                _record_parsed(self._self_call, self._self_plan.kind, parsed)
                self._self_call.end()
        except Exception:
            _log.debug("tokentrail: recording a streamed raw response failed", exc_info=True)
        return parsed

    def json(self) -> Any:
        data = self.__wrapped__.json()
        self._self_record_json(data)
        return data

    def _self_record_json(self, data: Any) -> None:
        try:
            if not self._self_call.ended and isinstance(data, dict):
                _record_parsed(self._self_call, self._self_plan.kind, data)
                self._self_call.end()
        except Exception:
            _log.debug("tokentrail: recording a streamed raw response failed", exc_info=True)

    def close(self) -> Any:
        try:
            return self.__wrapped__.close()
        finally:
            self._self_call.end()

    def __del__(self) -> None:
        try:
            self._self_call.end()
        except Exception:
            pass


class _AsyncRawProxy(_SyncRawProxy):
    async def parse(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self._self_parsed(await self.__wrapped__.parse(*args, **kwargs), bool(args or kwargs))

    async def json(self) -> Any:  # type: ignore[override]
        data = await self.__wrapped__.json()
        self._self_record_json(data)
        return data

    async def close(self) -> Any:  # type: ignore[override]
        try:
            return await self.__wrapped__.close()
        finally:
            self._self_call.end()


# --------------------------------------------------------------------------------------------
# billed errors
# --------------------------------------------------------------------------------------------
class _Billed:
    """The SDK raised ``error`` over an answer the provider billed: the call's result for ``_finish``."""

    __slots__ = ("error", "answer")

    def __init__(self, error: Exception, answer: Any) -> None:
        self.error = error
        self.answer = answer


def _billed(exc: Exception, kept: list[Any]) -> _Billed | None:
    """What ``parse`` was raising over: the completion a chat finish-reason error carries, else
    the Response the SDK was parsing (None: the call got no answer, or we failed to tell)."""
    try:
        answer = getattr(exc, "completion", None) if isinstance(exc, _types()["finish_reason_errors"]) else None
        if answer is None:
            answer = next((r for r in kept if r is not None), None)
    except Exception:
        _log.debug("tokentrail: reading a parse error's answer failed", exc_info=True)
        return None
    return _Billed(exc, answer) if answer is not None else None


# The Responses answers the SDK parsed in this call (a list while a ``parse`` runs).
_PARSED_RESPONSES: ContextVar[list[Any] | None] = ContextVar("tokentrail_openai_parsed", default=None)


def parse_response_wrapper(instruments: Instruments) -> Any:
    """wrapt wrapper of the SDK's ``parse_response``: keeps the ``Response`` it is given, so
    that a ``text_format`` failing on it (an answer cut short) still prices the call."""

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        kept = _PARSED_RESPONSES.get()
        if kept is not None:
            kept.append(kwargs.get("response"))
        return wrapped(*args, **kwargs)

    return wrapper


def _keeping_answer(wrapped: Any, is_async: bool) -> Any:
    """``wrapped`` (a ``parse``) returning a ``_Billed`` when it raises over a billed answer."""
    if is_async:
        async def send_async(*args: Any, **kwargs: Any) -> Any:
            kept: list[Any] = []
            token = _PARSED_RESPONSES.set(kept)
            try:
                return await wrapped(*args, **kwargs)
            except Exception as exc:
                result = _billed(exc, kept)
                if result is None:
                    raise
                return result
            finally:
                _PARSED_RESPONSES.reset(token)

        return send_async

    def send(*args: Any, **kwargs: Any) -> Any:
        kept: list[Any] = []
        token = _PARSED_RESPONSES.set(kept)
        try:
            return wrapped(*args, **kwargs)
        except Exception as exc:
            result = _billed(exc, kept)
            if result is None:
                raise
            return result
        finally:
            _PARSED_RESPONSES.reset(token)

    return send


def _injection_rejected(exc: BaseException, sent: dict[str, Any], asked: dict[str, Any]) -> bool:
    """A strict server's 400 for the stream_options we added (``Unrecognized request argument
    supplied: stream_options``)."""
    return (sent.get("stream_options") is not asked.get("stream_options")
            and getattr(exc, "status_code", None) == 400 and "stream_options" in str(exc))


def _uninjected(sent: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in sent.items() if k != "stream_options"}
    if "stream_options" in asked:
        kwargs["stream_options"] = asked["stream_options"]
    return kwargs


def _retrying(wrapped: Any, instance: Any, asked: dict[str, Any], is_async: bool) -> Any:
    """``wrapped``, sent once more without our stream_options when the server rejects them (the
    endpoint is then remembered), so the injection never breaks a call."""

    def rejected(exc: BaseException, sent: dict[str, Any]) -> bool:
        if not _injection_rejected(exc, sent, asked):
            return False
        _REJECTS_STREAM_OPTIONS.add(str(getattr(getattr(instance, "_client", None), "base_url", "")))
        return True

    if is_async:
        async def send_async(*args: Any, **sent: Any) -> Any:
            try:
                return await wrapped(*args, **sent)
            except Exception as exc:
                if not rejected(exc, sent):
                    raise
            return await wrapped(*args, **_uninjected(sent, asked))

        return send_async

    def send(*args: Any, **sent: Any) -> Any:
        try:
            return wrapped(*args, **sent)
        except Exception as exc:
            if not rejected(exc, sent):
                raise
        return wrapped(*args, **_uninjected(sent, asked))

    return send


def wrapper(kind: str, *, is_async: bool = False, parses: bool = False):
    """Wrapper factory (taking the instruments) of one resource method (``parses``: a ``parse``,
    which may raise over a billed answer)."""

    def factory(instruments: Instruments) -> Any:
        traced = genai_span.llm_call_wrapper(instruments, _begin(kind), _finish, is_async=is_async)
        if not parses:
            if kind not in (CHAT, COMPLETIONS):
                return traced
            # only a stream gets stream_options injected, so only a stream can have them rejected
            return lambda wrapped, instance, args, kwargs: traced(
                _retrying(wrapped, instance, kwargs, is_async) if kwargs.get("stream") else wrapped,
                instance, args, kwargs)

        if is_async:
            async def async_wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
                result = await traced(_keeping_answer(wrapped, True), instance, args, kwargs)
                if type(result) is _Billed:
                    raise result.error  # the SDK's own exception, after the call was priced
                return result

            return async_wrapper

        def sync_wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
            result = traced(_keeping_answer(wrapped, False), instance, args, kwargs)
            if type(result) is _Billed:
                raise result.error  # the SDK's own exception, after the call was priced
            return result

        return sync_wrapper

    return factory
