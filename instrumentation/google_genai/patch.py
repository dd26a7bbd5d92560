"""Wrappers for google-genai ``Models`` / ``AsyncModels``.

We wrap the private per-request methods (``_generate_content``, ``_generate_content_stream``)
rather than the public ones: the public methods may send several billed requests for one
call (automatic function calling, automatic continuation), and one span per request is what
makes the cost exact. Callers still get exactly the SDK's public return values.
"""

from __future__ import annotations

from typing import Any

from tokentrail import preflight
from tokentrail.instrumentation import genai_span
from tokentrail.instrumentation.base import Instruments
from tokentrail.instrumentation.fields import field, prompt_chars
from tokentrail.instrumentation.google_genai import usage as gusage
from tokentrail.instrumentation.streams import AsyncStreamProxy, StateStreamHooks, SyncStreamProxy

GEMINI = "gcp.gemini"
VERTEX_AI = "gcp.vertex_ai"
OPERATION = "generate_content"
EMBEDDINGS = "embeddings"


def _provider_and_server(instance: Any) -> tuple[str, str | None, int | None]:
    client = getattr(instance, "_api_client", None)
    provider = VERTEX_AI if getattr(client, "vertexai", False) else GEMINI
    return provider, *genai_span.server_of(getattr(getattr(client, "_http_options", None), "base_url", None))


def _service_tier(config: Any) -> str | None:
    """The requested tier (``flex`` is billed at half price, ``priority`` above standard)."""
    tier = field(config, "service_tier")
    tier = getattr(tier, "value", tier)
    if isinstance(tier, str) and tier.lower() not in ("", "unspecified"):
        return tier.lower()
    return None


def _begin(operation: str, stream: bool | None) -> genai_span.Begin:
    def begin(instruments: Instruments, instance: Any, args: tuple, kwargs: dict) -> genai_span.Begun:
        provider, host, port = _provider_and_server(instance)
        config = kwargs.get("config")
        call = genai_span.start_llm_call(
            instruments,
            provider=provider,
            operation=operation,
            request_model=gusage.model_id(kwargs.get("model")),
            server_address=host,
            server_port=port,
            max_tokens=field(config, "max_output_tokens"),
            stream=stream,
            service_tier=_service_tier(config),
            # measured only when a pre-flight check applies
            estimated_input_tokens=lambda: preflight.estimate_tokens(prompt_chars(kwargs.get("contents"))),
        )
        return genai_span.Begun(call, kwargs)

    return begin


def _record(call: genai_span.LLMCall, context: Any, response: Any) -> Any:
    call.set_response(**gusage.response_facts(response))
    call.read_usage(gusage.usage_from_response, response)
    call.end()
    return response


def _record_embedding(call: genai_span.LLMCall, context: Any, response: Any) -> Any:
    call.read_usage(gusage.embedding_usage, response)
    call.end()
    return response


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


def _stream(call: genai_span.LLMCall, context: Any, generator: Any) -> Any:
    return SyncStreamProxy(_activated(generator, call), StateStreamHooks(call, gusage.GenerateStreamState()))


def _stream_async(call: genai_span.LLMCall, context: Any, stream: Any) -> Any:
    return AsyncStreamProxy(stream, StateStreamHooks(call, gusage.GenerateStreamState()))


def wrapper(operation: str = OPERATION, *, stream: bool = False, is_async: bool = False):
    """Wrapper factory (taking the instruments) of one SDK method."""
    if stream:
        begin, finish = _begin(operation, True), _stream_async if is_async else _stream
    elif operation == EMBEDDINGS:
        begin, finish = _begin(operation, None), _record_embedding
    else:
        begin, finish = _begin(operation, False), _record
    return lambda instruments: genai_span.llm_call_wrapper(instruments, begin, finish, is_async=is_async)
