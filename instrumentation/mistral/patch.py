"""Wrappers for the ``mistralai`` SDK: ``chat.complete``/``stream`` (sync and async) and ``embeddings.create``."""

from __future__ import annotations

from typing import Any

from tokentrail import preflight
from tokentrail.instrumentation import genai_span
from tokentrail.instrumentation.base import Instruments
from tokentrail.instrumentation.fields import prompt_chars
from tokentrail.instrumentation.mistral import usage as musage
from tokentrail.instrumentation.streams import AsyncStreamProxy, StateStreamHooks, SyncStreamProxy

PROVIDER = "mistral_ai"
CHAT = "chat"
EMBEDDINGS = "embeddings"


def _server(instance: Any, kwargs: dict) -> tuple[str | None, int | None]:
    try:
        url = kwargs.get("server_url") or instance.sdk_configuration.get_server_details()[0]
    except Exception:
        return None, None
    return genai_span.server_of(url)


def _begin(operation: str, stream: bool | None) -> genai_span.Begin:
    def begin(instruments: Instruments, instance: Any, args: tuple, kwargs: dict) -> genai_span.Begun:
        tier = kwargs.get("service_tier")
        prompt = kwargs.get("messages") if operation == CHAT else kwargs.get("inputs")
        host, port = _server(instance, kwargs)
        call = genai_span.start_llm_call(
            instruments,
            provider=PROVIDER,
            operation=operation,
            request_model=kwargs.get("model"),
            server_address=host,
            server_port=port,
            max_tokens=kwargs.get("max_tokens"),
            stream=stream,
            service_tier=tier if isinstance(tier, str) else None,
            # measured only when a pre-flight check applies
            estimated_input_tokens=lambda: preflight.estimate_tokens(prompt_chars(prompt)),
        )
        return genai_span.Begun(call, kwargs)

    return begin


def _record(call: genai_span.LLMCall, context: Any, response: Any) -> Any:
    call.set_response(**musage.response_facts(response))
    call.read_usage(musage.usage_from_info, getattr(response, "usage", None))
    call.end()
    return response


def _streamed(is_async: bool) -> genai_span.Finish:
    proxy = AsyncStreamProxy if is_async else SyncStreamProxy

    def finish(call: genai_span.LLMCall, context: Any, events: Any) -> Any:
        return proxy(events, StateStreamHooks(call, musage.ChatStreamState()))

    return finish


def wrapper(operation: str, *, stream: bool = False, is_async: bool = False):
    """Wrapper factory (taking the instruments) of one SDK method."""
    begin = _begin(operation, True if stream else (False if operation == CHAT else None))
    finish = _streamed(is_async) if stream else _record
    return lambda instruments: genai_span.llm_call_wrapper(instruments, begin, finish, is_async=is_async)
