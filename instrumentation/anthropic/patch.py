"""wrapt wrappers for the anthropic SDK.

Patched at the client's ``request`` (``SyncAPIClient.request`` / ``AsyncAPIClient.request``),
the one method every Messages surface goes through exactly once per call, retries included:
``messages.create`` (plain and ``stream=True``), the ``messages.stream`` helper, ``parse``,
``beta.messages``, and the ``AnthropicBedrock`` / ``AnthropicVertex`` clients (same resources,
other transport). A call is recognised by the SDK's own span name for it
(``anthropic.messages.create``); ``count_tokens`` is free and gets no span from us. Raw
responses (``with_raw_response`` / ``with_streaming_response``) whose body is still unread are
finished when the caller parses them (``APIResponse.parse``), or at garbage collection.
Message Batch results get one span each as they are read (``Batches.results``).

The SDK's native OpenTelemetry span for a call we trace is suppressed (see ``__init__``):
the user gets one LLM span per call. Our failures never reach the caller.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any

from tokentrail import preflight
from tokentrail.instrumentation import genai_span
from tokentrail.instrumentation.anthropic.usage import StreamState, field, service_tier, usage_from_anthropic
from tokentrail.instrumentation.streams import AsyncStreamProxy, LLMCallStreamHooks, StreamHooks, SyncStreamProxy
from tokentrail.processor.usage import InvalidUsage

_log = logging.getLogger(__name__)

MESSAGES_CREATE = "anthropic.messages.create"
# True only while the SDK runs a call that one of our spans covers (native span suppression).
_TRACED_CALL: ContextVar[bool] = ContextVar("tokentrail_anthropic_traced_call", default=False)
OPERATION = "chat"
BATCH_TIER = "batch"


# --- request side -------------------------------------------------------------------------
def _chars(value: Any) -> int:
    """Characters of text in a request part, for the pre-flight estimate (images count a bit)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        if value.get("type") in ("image", "document"):
            return 3000
        return sum(_chars(v) for k, v in value.items() if k not in ("type", "cache_control"))
    if isinstance(value, (list, tuple)):
        return sum(_chars(v) for v in value)
    return 0


def _options(args: tuple, kwargs: dict) -> Any:
    return args[1] if len(args) > 1 else kwargs.get("options")


def _traced_body(options: Any) -> dict | None:
    """The JSON body when this request is a Messages call we trace, else None."""
    if getattr(options, "span_name", None) != MESSAGES_CREATE:
        return None
    body = getattr(options, "json_data", None)
    return body if isinstance(body, dict) else None


def _start(tracer: Any, client: Any, body: dict, stream: bool) -> genai_span.LLMCall:
    provider = getattr(client, "_gen_ai_provider_name", None) or "anthropic"
    try:
        host = client.base_url.host
    except Exception:
        host = None
    try:
        chars = _chars(body.get("messages")) + _chars(body.get("system")) + _chars(body.get("tools"))
    except Exception:  # an exotic request body: estimate nothing rather than fail
        chars = 0
    return genai_span.start_llm_call(
        tracer,
        provider=provider,
        operation=OPERATION,
        request_model=body.get("model"),
        server_address=host,
        max_tokens=body.get("max_tokens"),
        stream=stream,
        estimated_input_tokens=preflight.estimate_tokens(chars),
    )


# --- response side ------------------------------------------------------------------------
def record_message(call: genai_span.LLMCall, message: Any) -> None:
    """Copy a Message's (model or decoded JSON) model, id, stop reason and usage onto the call."""
    usage = field(message, "usage")
    stop = field(message, "stop_reason")
    call.set_response(model=field(message, "model"), response_id=field(message, "id"),
                      finish_reasons=[stop] if stop else None, service_tier=service_tier(usage))
    try:
        call.set_usage(usage_from_anthropic(usage))
    except InvalidUsage:
        _log.debug("tokentrail: malformed Anthropic usage %r", usage)


class MessageStreamHooks(LLMCallStreamHooks):
    """Folds raw stream events into the call; ends it once however the stream ends."""

    __slots__ = ("state",)

    def __init__(self, call: genai_span.LLMCall) -> None:
        super().__init__(call)
        self.state = StreamState()

    def on_item(self, item: Any) -> bool:
        self.state.observe(item)
        return False

    def record(self) -> None:
        state = self.state
        self.call.set_response(model=state.model, response_id=state.response_id,
                               finish_reasons=[state.stop_reason] if state.stop_reason else None,
                               service_tier=service_tier(state.usage))
        try:
            self.call.set_usage(state.final_usage())
        except InvalidUsage:
            _log.debug("tokentrail: malformed streamed Anthropic usage %r", state.usage)


def _finish(call: genai_span.LLMCall, result: Any, stream: bool, is_async: bool) -> Any:
    """Record a non-streamed result and end, or hand back a stream proxy that ends later."""
    try:
        if stream and hasattr(result, "response") and not hasattr(result, "http_response"):
            proxy = AsyncStreamProxy if is_async else SyncStreamProxy
            return proxy(result, MessageStreamHooks(call))
        raw = getattr(result, "http_response", None)
        if raw is not None:  # with_raw_response / with_streaming_response
            if not stream and raw.is_closed:
                record_message(call, raw.json())
            else:  # body unread: finish when the caller parses it (or at garbage collection)
                _pending[result] = (call, weakref.finalize(result, call.end))
                return result
            call.end()
            return result
        record_message(call, result)
    except Exception:
        _log.debug("tokentrail: recording an Anthropic response failed", exc_info=True)
    call.end()
    return result


# Raw responses whose body the caller has yet to read, with the call they will finish.
_pending: "weakref.WeakKeyDictionary[Any, tuple[genai_span.LLMCall, weakref.finalize]]" = weakref.WeakKeyDictionary()


def _parsed(instance: Any, parsed: Any, args: tuple, kwargs: dict, is_async: bool) -> Any:
    """``APIResponse.parse`` result of a raw response we hold a call for: record or proxy it."""
    try:
        pending = _pending.pop(instance, None)
    except Exception:
        pending = None
    if pending is None:
        return parsed
    call, finalizer = pending
    finalizer.detach()
    try:
        stream = bool(getattr(instance, "_is_sse_stream", False))
        result = _finish(call, parsed, stream, is_async)
        if result is not parsed:  # later parse() calls must hand back the same proxy
            key = kwargs.get("to") or getattr(instance, "_cast_to", None)
            instance._parsed_by_type[key] = result
        return result
    except Exception:
        _log.debug("tokentrail: recording a parsed raw response failed", exc_info=True)
        call.end()
        return parsed


def sync_parse_wrapper(wrapped, instance, args, kwargs):
    return _parsed(instance, wrapped(*args, **kwargs), args, kwargs, is_async=False)


async def async_parse_wrapper(wrapped, instance, args, kwargs):
    return _parsed(instance, await wrapped(*args, **kwargs), args, kwargs, is_async=True)


def sync_request_wrapper(tracer: Any):
    def wrapper(wrapped, instance, args, kwargs):
        body = _traced_body(_options(args, kwargs))
        if body is None or genai_span.should_skip():
            return wrapped(*args, **kwargs)
        stream = bool(kwargs.get("stream", False))
        call = _start(tracer, instance, body, stream)
        token = _TRACED_CALL.set(not call.ended)
        try:
            result = call.run(wrapped, args, kwargs)
        finally:
            _TRACED_CALL.reset(token)
        return _finish(call, result, stream, is_async=False)

    return wrapper


def async_request_wrapper(tracer: Any):
    async def wrapper(wrapped, instance, args, kwargs):
        body = _traced_body(_options(args, kwargs))
        if body is None or genai_span.should_skip():
            return await wrapped(*args, **kwargs)
        stream = bool(kwargs.get("stream", False))
        call = _start(tracer, instance, body, stream)
        token = _TRACED_CALL.set(not call.ended)
        try:
            result = await call.run_async(wrapped, args, kwargs)
        finally:
            _TRACED_CALL.reset(token)
        return _finish(call, result, stream, is_async=True)

    return wrapper


def suppress_native_span(wrapped, instance, args, kwargs):
    """``anthropic._base_client.start_api_call_span``: no native span for a call we trace.

    Returning None is the SDK's own "no span for this call" path (it then sends the request
    without one). Only while our span for this very call is active, so a call we do not trace
    keeps its native span.
    """
    options = args[2] if len(args) > 2 else kwargs.get("options")
    if _TRACED_CALL.get() and getattr(options, "span_name", None) == MESSAGES_CREATE:
        return None
    return wrapped(*args, **kwargs)


# --- Message Batches ----------------------------------------------------------------------
_SEEN_LIMIT = 100_000
_seen_results: "OrderedDict[str, None]" = OrderedDict()
_seen_lock = threading.Lock()


def _first_sighting(key: str) -> bool:
    """True the first time a batch result is read in this process (re-reads are not re-priced)."""
    with _seen_lock:
        if key in _seen_results:
            return False
        _seen_results[key] = None
        if len(_seen_results) > _SEEN_LIMIT:
            _seen_results.popitem(last=False)
        return True


class BatchResultHooks(StreamHooks):
    """One LLM span per succeeded batch result, priced at the batch tier, as results are read."""

    __slots__ = ("tracer", "provider", "batch_id")

    def __init__(self, tracer: Any, provider: str, batch_id: str) -> None:
        self.tracer = tracer
        self.provider = provider
        self.batch_id = batch_id

    def on_item(self, item: Any) -> bool:
        result = field(item, "result")
        if field(result, "type") != "succeeded":
            return False  # errored / canceled / expired requests are not billed
        message = field(result, "message")
        key = f"{self.batch_id}/{field(item, 'custom_id')}/{field(message, 'id')}"
        if not _first_sighting(key):
            return False
        usage = field(message, "usage")
        call = genai_span.start_llm_call(
            self.tracer, provider=self.provider, operation=OPERATION, request_model=field(message, "model"),
            service_tier=service_tier(usage) or BATCH_TIER, check_budget=False,
        )
        record_message(call, message)
        call.end()
        return False


def batch_results_wrapper(tracer: Any, is_async: bool):
    def provider_of(instance: Any) -> str:
        client = getattr(instance, "_client", None)
        return getattr(client, "_gen_ai_provider_name", None) or "anthropic"

    def batch_id(args: tuple, kwargs: dict) -> str:
        return str(args[0] if args else kwargs.get("message_batch_id"))

    if is_async:
        async def async_wrapper(wrapped, instance, args, kwargs):
            decoder = await wrapped(*args, **kwargs)
            try:
                return AsyncStreamProxy(decoder, BatchResultHooks(tracer, provider_of(instance), batch_id(args, kwargs)))
            except Exception:
                return decoder

        return async_wrapper

    def wrapper(wrapped, instance, args, kwargs):
        decoder = wrapped(*args, **kwargs)
        try:
            return SyncStreamProxy(decoder, BatchResultHooks(tracer, provider_of(instance), batch_id(args, kwargs)))
        except Exception:
            return decoder

    return wrapper
