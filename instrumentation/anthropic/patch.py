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

The SDK's native OpenTelemetry span for a call we trace is suppressed without changing what
goes on the wire (``native_span_wrapper``): the user gets one LLM span per call. Our failures
never reach the caller.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

from opentelemetry import trace

from tokentrail import preflight, propagation, tasks
from tokentrail.instrumentation import genai_span
from tokentrail.instrumentation.anthropic.usage import MessageStreamState, message_facts, service_tier, usage_from_anthropic
from tokentrail.instrumentation.base import Instruments
from tokentrail.instrumentation.fields import field, prompt_chars
from tokentrail.instrumentation.streams import AsyncStreamProxy, StateStreamHooks, StreamHooks, SyncStreamProxy
from tokentrail.reconcile import keys as join_keys
from tokentrail.state import BoundedSet

MESSAGES_CREATE = "anthropic.messages.create"
OPERATION = "chat"
BATCH_TIER = "batch"


# --- request side -------------------------------------------------------------------------
def _traced_body(options: Any) -> dict | None:
    """The JSON body when this request is a Messages call we trace, else None."""
    if getattr(options, "span_name", None) != MESSAGES_CREATE:
        return None
    body = getattr(options, "json_data", None)
    return body if isinstance(body, dict) else None


def _begin(is_async: bool) -> genai_span.Begin:
    def begin(instruments: Instruments, client: Any, args: tuple, kwargs: dict) -> genai_span.Begun | None:
        body = _traced_body(args[1] if len(args) > 1 else kwargs.get("options"))
        if body is None:
            return None
        stream = bool(kwargs.get("stream", False))
        host, port = genai_span.server_of(getattr(client, "base_url", None))
        call = genai_span.start_llm_call(
            instruments,
            provider=getattr(client, "_gen_ai_provider_name", None) or "anthropic",
            operation=OPERATION,
            request_model=body.get("model"),
            server_address=host,
            server_port=port,
            max_tokens=body.get("max_tokens"),
            stream=stream,
            estimated_input_tokens=lambda: _estimate(body),  # measured only when a pre-flight check applies
            attributes=join_keys.anthropic(client),  # what the provider's bill groups by
        )
        return genai_span.Begun(call, kwargs, (stream, is_async))

    return begin


def _estimate(body: dict) -> int:
    return preflight.estimate_tokens(prompt_chars((body.get("messages"), body.get("system"), body.get("tools"))))


# --- response side ------------------------------------------------------------------------
def record_message(call: genai_span.LLMCall, message: Any) -> None:
    """Copy a Message's (model or decoded JSON) model, id, stop reason and usage onto the call."""
    call.set_response(**message_facts(message))
    call.read_usage(usage_from_anthropic, field(message, "usage"))


def _finish(call: genai_span.LLMCall, context: tuple[bool, bool], result: Any) -> Any:
    """Record a non-streamed result and end, or hand back a stream proxy that ends later."""
    stream, is_async = context
    if stream and hasattr(result, "response") and not hasattr(result, "http_response"):
        proxy = AsyncStreamProxy if is_async else SyncStreamProxy
        return proxy(result, StateStreamHooks(call, MessageStreamState()))
    # an instance attribute of the SDK's raw responses: a Message (pydantic) would answer the
    # missing name with an AttributeError costing more than the rest of this function
    fields_ = getattr(result, "__dict__", None)
    raw = fields_.get("http_response") if fields_ is not None else getattr(result, "http_response", None)
    if raw is not None:  # with_raw_response / with_streaming_response
        if stream or not raw.is_closed:  # body unread: finish when the caller parses it (or at GC)
            _pending[result] = (call, weakref.finalize(result, call.end))
            return result
        record_message(call, raw.json())
    else:
        record_message(call, result)
    call.end()
    return result


def request_wrapper(is_async: bool = False):
    return lambda instruments: genai_span.llm_call_wrapper(instruments, _begin(is_async), _finish, is_async=is_async)


# Raw responses whose body the caller has yet to read, with the call they will finish.
_pending: "weakref.WeakKeyDictionary[Any, tuple[genai_span.LLMCall, weakref.finalize]]" = weakref.WeakKeyDictionary()


def _parsed(instruments: Instruments, instance: Any, args: tuple, kwargs: dict, parsed: Any, is_async: bool) -> Any:
    """``APIResponse.parse`` result of a raw response we hold a call for: record or proxy it."""
    pending = _pending.pop(instance, None)
    if pending is None:
        return parsed
    call, finalizer = pending
    finalizer.detach()
    stream = bool(getattr(instance, "_is_sse_stream", False))
    try:
        result = _finish(call, (stream, is_async), parsed)
    except Exception:
        call.end()
        raise
    if result is not parsed:  # later parse() calls must hand back the same proxy
        instance._parsed_by_type[kwargs.get("to") or getattr(instance, "_cast_to", None)] = result
    return result


def parse_method(is_async: bool = False):
    """The replacement (a plain method: ``Target(plain=True)``) of ``APIResponse.parse``, which
    every non-raw call goes through too: with no raw response of ours waiting for its parse
    (the usual case) it only hands the result back."""

    def observe(instruments: Instruments, instance: Any, args: tuple, kwargs: dict, parsed: Any) -> Any:
        return _parsed(instruments, instance, args, kwargs, parsed, is_async)

    def factory(instruments: Instruments) -> Any:
        observed = genai_span.result_observer(instruments, observe)

        def replace(original: Any) -> Any:
            if is_async:
                @functools.wraps(original)
                async def parse_async(self: Any, *args: Any, **kwargs: Any) -> Any:
                    parsed = await original(self, *args, **kwargs)
                    return observed(self, args, kwargs, parsed) if _pending else parsed

                return parse_async

            @functools.wraps(original)
            def parse(self: Any, *args: Any, **kwargs: Any) -> Any:
                parsed = original(self, *args, **kwargs)
                return observed(self, args, kwargs, parsed) if _pending else parsed

            return parse

        return replace

    return factory


def native_span_wrapper(instruments: Instruments):
    """``anthropic._base_client.start_api_call_span``: no duplicate native span for a call we trace.

    While our span of this very Messages call is active and the native span would reach the
    same pipeline, the SDK gets a non-recording span carrying our span's context: it records
    nothing, and the SDK still puts ``traceparent``/``tracestate``/``baggage`` on the request
    exactly as it would have (its "no span" path sends none). A tracer provider the user gave
    the client (``open_telemetry={"tracer_provider": X}``) other than ours keeps its native span.

    A plain function in the SDK module's place (``Target(plain=True)``): every call goes through it.
    """

    def replace(wrapped: Any) -> Any:
        @functools.wraps(wrapped)
        def start_api_call_span(*args: Any, **kwargs: Any) -> Any:
            options = args[2] if len(args) > 2 else kwargs.get("options")
            if not (genai_span.in_llm_call() and getattr(options, "span_name", None) == MESSAGES_CREATE):
                return wrapped(*args, **kwargs)
            tracer = args[0] if args else kwargs.get("tracer")
            if _other_pipeline(tracer, instruments):
                return wrapped(*args, **kwargs)
            return tasks.CallStandIn(trace.get_current_span())

        return start_api_call_span

    return replace


def trace_headers_function(instruments: Instruments):
    """``anthropic._tracing.trace_headers(span)``: the SDK works out the propagation headers of a
    call's span twice per HTTP try (to remove them before signing, then to set them); for our
    stand-in span they are worked out once per call, in the call's unchanging context (the
    baggage with the owner is what makes them cost: its header is remembered per owner,
    ``propagation.span_headers``). A plain function in the module's place."""

    def replace(wrapped: Any) -> Any:
        @functools.wraps(wrapped)
        def trace_headers(span: Any) -> Any:
            if type(span) is not tasks.CallStandIn:
                return wrapped(span)
            headers = span.trace_headers
            if headers is None:
                headers = span.trace_headers = propagation.span_headers(span, wrapped)
            return dict(headers)

        return trace_headers

    return replace


def url_attributes_function(instruments: Instruments):
    """``anthropic._tracing.set_url_attributes(span, url, ...)``: nothing to work out for our
    stand-in span, which records nothing (the SDK would format the URL attributes to drop them)."""

    def replace(wrapped: Any) -> Any:
        @functools.wraps(wrapped)
        def set_url_attributes(span: Any, *args: Any, **kwargs: Any) -> Any:
            if type(span) is tasks.CallStandIn:
                return None
            return wrapped(span, *args, **kwargs)

        return set_url_attributes

    return replace


def _other_pipeline(tracer: Any, instruments: Instruments) -> bool:
    """Whether ``tracer`` (an SDK tracer) exports through a provider other than ours."""
    theirs = getattr(getattr(tracer, "_tracer", tracer), "span_processor", None)  # ProxyTracer: its real one
    ours = getattr(instruments.tracer_provider or trace.get_tracer_provider(), "_active_span_processor", None)
    return theirs is not None and ours is not None and theirs is not ours


# --- Message Batches ----------------------------------------------------------------------
# Batch results already priced in this process (re-reads are not re-priced).
_seen_results: BoundedSet[str] = BoundedSet(100_000)


class BatchResultHooks(StreamHooks):
    """One LLM span per succeeded batch result, priced at the batch tier, as results are read."""

    __slots__ = ("instruments", "provider", "batch_id")

    def __init__(self, instruments: Instruments, provider: str, batch_id: str) -> None:
        self.instruments = instruments
        self.provider = provider
        self.batch_id = batch_id

    def on_item(self, item: Any) -> bool:
        result = field(item, "result")
        if field(result, "type") != "succeeded":
            return False  # errored / canceled / expired requests are not billed
        message = field(result, "message")
        if not _seen_results.add(f"{self.batch_id}/{field(item, 'custom_id')}/{field(message, 'id')}"):
            return False
        call = genai_span.start_llm_call(
            self.instruments, provider=self.provider, operation=OPERATION, request_model=field(message, "model"),
            service_tier=service_tier(field(message, "usage")) or BATCH_TIER, check_budget=False,
        )
        record_message(call, message)
        call.end()
        return False


def batch_results_wrapper(is_async: bool = False):
    proxy = AsyncStreamProxy if is_async else SyncStreamProxy

    def observe(instruments: Instruments, instance: Any, args: tuple, kwargs: dict, decoder: Any) -> Any:
        provider = getattr(getattr(instance, "_client", None), "_gen_ai_provider_name", None) or "anthropic"
        batch_id = str(args[0] if args else kwargs.get("message_batch_id"))
        return proxy(decoder, BatchResultHooks(instruments, provider, batch_id))

    return lambda instruments: genai_span.result_wrapper(instruments, observe, is_async=is_async)
