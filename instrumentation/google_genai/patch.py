"""Wrappers for google-genai ``Models`` / ``AsyncModels``.

We wrap the private per-request methods (``_generate_content``, ``_generate_content_stream``)
rather than the public ones: the public methods may send several billed requests for one
call (automatic function calling, automatic continuation), and one span per request is what
makes the cost exact. Callers still get exactly the SDK's public return values.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace

from tokentrail import preflight
from tokentrail.instrumentation import genai_span
from tokentrail.instrumentation.google_genai import usage as gusage
from tokentrail.instrumentation.streams import AsyncStreamProxy, FoldingStreamHooks, SyncStreamProxy

_log = logging.getLogger(__name__)

GEMINI = "gcp.gemini"
VERTEX_AI = "gcp.vertex_ai"
OPERATION = "generate_content"
EMBEDDINGS = "embeddings"

# Content size estimate for the pre-flight check: bounded walk, never the whole payload twice.
_MAX_WALK = 2_000


def _provider_and_host(instance: Any) -> tuple[str, str | None]:
    client = getattr(instance, "_api_client", None)
    provider = VERTEX_AI if getattr(client, "vertexai", False) else GEMINI
    host = None
    try:
        host = urlsplit(client._http_options.base_url).hostname
    except Exception:
        pass
    return provider, host


def _config_value(config: Any, name: str) -> Any:
    if config is None:
        return None
    if isinstance(config, dict):
        return config.get(name)
    return getattr(config, name, None)


def _service_tier(config: Any) -> str | None:
    """The requested tier (``flex`` is billed at half price, ``priority`` above standard)."""
    tier = _config_value(config, "service_tier")
    tier = getattr(tier, "value", tier)
    if isinstance(tier, str) and tier.lower() not in ("", "unspecified"):
        return tier.lower()
    return None


def _text_chars(value: Any, budget: list[int]) -> int:
    """Characters of text in ``contents`` (str, Content, Part, dicts, lists), bounded."""
    if budget[0] <= 0:
        return 0
    budget[0] -= 1
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_chars(v, budget) for k, v in value.items() if k in ("text", "parts", "contents"))
    if isinstance(value, (list, tuple)):
        return sum(_text_chars(v, budget) for v in value)
    text = getattr(value, "text", None)
    if isinstance(text, str):
        return len(text)
    parts = getattr(value, "parts", None)
    return _text_chars(parts, budget) if parts else 0


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


def _start_unguarded(tracer: trace.Tracer, instance: Any, kwargs: dict, *, stream: bool | None, operation: str = OPERATION) -> genai_span.LLMCall:
    provider, host = _provider_and_host(instance)
    config = kwargs.get("config")
    try:
        chars = _text_chars(kwargs.get("contents"), [_MAX_WALK])
    except Exception:
        chars = 0
    return genai_span.start_llm_call(
        tracer,
        provider=provider,
        operation=operation,
        request_model=gusage.model_id(kwargs.get("model")),
        server_address=host,
        max_tokens=_config_value(config, "max_output_tokens"),
        stream=stream,
        service_tier=_service_tier(config),
        estimated_input_tokens=preflight.estimate_tokens(chars),
    )


def _record_response(call: genai_span.LLMCall, response: Any) -> None:
    try:
        call.set_response(
            model=getattr(response, "model_version", None),
            response_id=getattr(response, "response_id", None),
            finish_reasons=gusage.finish_reasons(response),
        )
        call.set_usage(gusage.usage_from_response(response))
    except Exception:
        _log.debug("tokentrail: reading a Gemini response failed", exc_info=True)


def _activated(generator: Any, call: genai_span.LLMCall) -> Any:
    """Runs each step of the SDK's lazy stream generator inside our span's context, so the
    HTTP request it sends on the first step is a child of the LLM span."""
    try:
        while True:
            with call.activate():
                try:
                    item = next(generator)
                except StopIteration:
                    return
            yield item
    finally:
        generator.close()


def _record_embedding(call: genai_span.LLMCall, response: Any) -> None:
    try:
        call.set_usage(gusage.embedding_usage(response))
    except Exception:
        _log.debug("tokentrail: reading a Gemini embedding response failed", exc_info=True)


_UNARY = {OPERATION: (False, _record_response), EMBEDDINGS: (None, _record_embedding)}


def generate_content(tracer: trace.Tracer, operation: str = OPERATION):
    stream, record = _UNARY[operation]

    def wrapper(wrapped, instance, args, kwargs):
        if genai_span.should_skip():
            return wrapped(*args, **kwargs)
        call = _start(tracer, instance, kwargs, stream=stream, operation=operation)
        response = call.run(wrapped, args, kwargs)
        record(call, response)
        call.end()
        return response

    return wrapper


def generate_content_async(tracer: trace.Tracer, operation: str = OPERATION):
    stream, record = _UNARY[operation]

    async def wrapper(wrapped, instance, args, kwargs):
        if genai_span.should_skip():
            return await wrapped(*args, **kwargs)
        call = _start(tracer, instance, kwargs, stream=stream, operation=operation)
        response = await call.run_async(wrapped, args, kwargs)
        record(call, response)
        call.end()
        return response

    return wrapper


def embed_content(tracer: trace.Tracer):
    return generate_content(tracer, EMBEDDINGS)


def embed_content_async(tracer: trace.Tracer):
    return generate_content_async(tracer, EMBEDDINGS)


def generate_content_stream(tracer: trace.Tracer):
    def wrapper(wrapped, instance, args, kwargs):
        if genai_span.should_skip():
            return wrapped(*args, **kwargs)
        call = _start(tracer, instance, kwargs, stream=True)
        generator = call.run(wrapped, args, kwargs)
        return SyncStreamProxy(_activated(generator, call), FoldingStreamHooks(call, gusage.StreamUsage()))

    return wrapper


def generate_content_stream_async(tracer: trace.Tracer):
    async def wrapper(wrapped, instance, args, kwargs):
        if genai_span.should_skip():
            return await wrapped(*args, **kwargs)
        call = _start(tracer, instance, kwargs, stream=True)
        stream = await call.run_async(wrapped, args, kwargs)
        return AsyncStreamProxy(stream, FoldingStreamHooks(call, gusage.StreamUsage()))

    return wrapper
