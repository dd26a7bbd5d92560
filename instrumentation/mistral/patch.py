"""Wrappers for the ``mistralai`` SDK: ``chat.complete``/``stream`` (sync and async) and ``embeddings.create``."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace

from tokentrail import preflight
from tokentrail.instrumentation import genai_span
from tokentrail.instrumentation.mistral import usage as musage
from tokentrail.instrumentation.streams import AsyncStreamProxy, FoldingStreamHooks, SyncStreamProxy

_log = logging.getLogger(__name__)

PROVIDER = "mistral_ai"
CHAT = "chat"
EMBEDDINGS = "embeddings"
_MAX_WALK = 2_000


def _host(instance: Any, kwargs: dict) -> str | None:
    try:
        url = kwargs.get("server_url") or instance.sdk_configuration.get_server_details()[0]
        return urlsplit(url).hostname
    except Exception:
        return None


def _chars(value: Any, budget: list[int]) -> int:
    if budget[0] <= 0:
        return 0
    budget[0] -= 1
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_chars(v, budget) for k, v in value.items() if k in ("content", "text"))
    if isinstance(value, (list, tuple)):
        return sum(_chars(v, budget) for v in value)
    content = getattr(value, "content", None) or getattr(value, "text", None)
    return _chars(content, budget) if content is not None else 0


def _max_tokens(kwargs: dict) -> int | None:
    value = kwargs.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _start(*args: Any, **kwargs: Any) -> genai_span.LLMCall:
    """Start the call's span; our own failure yields a no-op call (the SDK call still runs).
    Only the pre-flight ``BudgetExceeded`` propagates."""
    try:
        return _start_unguarded(*args, **kwargs)
    except BaseException as exc:
        if genai_span.is_budget_exceeded(exc):
            raise
        _log.debug("tokentrail: starting the LLM span failed", exc_info=True)
        return genai_span._NoOpCall()


def _start_unguarded(tracer: trace.Tracer, instance: Any, kwargs: dict, *, operation: str, stream: bool | None) -> genai_span.LLMCall:
    try:
        chars = _chars(kwargs.get("messages") if operation == CHAT else kwargs.get("inputs"), [_MAX_WALK])
    except Exception:
        chars = 0
    tier = kwargs.get("service_tier")
    return genai_span.start_llm_call(
        tracer,
        provider=PROVIDER,
        operation=operation,
        request_model=kwargs.get("model"),
        server_address=_host(instance, kwargs),
        max_tokens=_max_tokens(kwargs),
        stream=stream,
        service_tier=tier if isinstance(tier, str) else None,
        estimated_input_tokens=preflight.estimate_tokens(chars),
    )


def _record_response(call: genai_span.LLMCall, response: Any) -> None:
    try:
        info = getattr(response, "usage", None)
        call.set_response(
            model=getattr(response, "model", None),
            response_id=getattr(response, "id", None),
            finish_reasons=musage.finish_reasons(response),
            service_tier=musage.service_tier(info),
        )
        call.set_usage(musage.usage_from_info(info))
    except Exception:
        _log.debug("tokentrail: reading a Mistral response failed", exc_info=True)


def unary(tracer: trace.Tracer, operation: str):
    def wrapper(wrapped, instance, args, kwargs):
        if genai_span.should_skip():
            return wrapped(*args, **kwargs)
        call = _start(tracer, instance, kwargs, operation=operation, stream=False if operation == CHAT else None)
        response = call.run(wrapped, args, kwargs)
        _record_response(call, response)
        call.end()
        return response

    return wrapper


def unary_async(tracer: trace.Tracer, operation: str):
    async def wrapper(wrapped, instance, args, kwargs):
        if genai_span.should_skip():
            return await wrapped(*args, **kwargs)
        call = _start(tracer, instance, kwargs, operation=operation, stream=False if operation == CHAT else None)
        response = await call.run_async(wrapped, args, kwargs)
        _record_response(call, response)
        call.end()
        return response

    return wrapper


def stream(tracer: trace.Tracer):
    def wrapper(wrapped, instance, args, kwargs):
        if genai_span.should_skip():
            return wrapped(*args, **kwargs)
        call = _start(tracer, instance, kwargs, operation=CHAT, stream=True)
        events = call.run(wrapped, args, kwargs)
        return SyncStreamProxy(events, FoldingStreamHooks(call, musage.StreamUsage()))

    return wrapper


def stream_async(tracer: trace.Tracer):
    async def wrapper(wrapped, instance, args, kwargs):
        if genai_span.should_skip():
            return await wrapped(*args, **kwargs)
        call = _start(tracer, instance, kwargs, operation=CHAT, stream=True)
        events = await call.run_async(wrapped, args, kwargs)
        return AsyncStreamProxy(events, FoldingStreamHooks(call, musage.StreamUsage()))

    return wrapper
