"""wrapt wrapper around botocore's ``BaseClient._make_api_call`` for ``bedrock-runtime``.

The same hook opentelemetry-instrumentation-botocore uses: every client (created before or
after instrumenting) goes through it, and we act only on the four Bedrock Runtime model
operations. Converse returns usage in the response; ConverseStream in its ``metadata``
event; InvokeModel in the model family's body or Bedrock's count headers (the body is read
and replaced by an identical ``StreamingBody``); InvokeModelWithResponseStream in its chunks.
Streams are handed back as proxies of botocore's ``EventStream``.
"""

from __future__ import annotations

import io
import json
from typing import Any

from tokentrail import preflight
from tokentrail.instrumentation import genai_span
from tokentrail.instrumentation.base import Instruments
from tokentrail.instrumentation.bedrock.usage import (
    ConverseStreamState,
    InvokeStreamState,
    invoke_response_facts,
    usage_from_converse,
    usage_from_invoke,
)
from tokentrail.instrumentation.fields import prompt_chars
from tokentrail.instrumentation.streams import StateStreamHooks, SyncStreamProxy

SERVICE = "bedrock-runtime"
PROVIDER = "aws.bedrock"
OPERATION = "chat"
CONVERSE, CONVERSE_STREAM = "Converse", "ConverseStream"
INVOKE, INVOKE_STREAM = "InvokeModel", "InvokeModelWithResponseStream"
OPERATIONS = frozenset((CONVERSE, CONVERSE_STREAM, INVOKE, INVOKE_STREAM))
# where each model family puts its output-token limit in an InvokeModel body
_MAX_TOKEN_KEYS = ("max_tokens", "max_gen_len", "maxTokens", "max_new_tokens", "maxTokenCount")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _invoke_max_tokens(body: Any) -> int | None:
    """The output-token limit of an InvokeModel body, wherever its model family puts it."""
    try:
        decoded = json.loads(body) if isinstance(body, (str, bytes, bytearray)) else None
    except ValueError:
        return None
    if not isinstance(decoded, dict):
        return None
    config = decoded.get("inferenceConfig") or decoded.get("textGenerationConfig") or {}
    for source in (decoded, config if isinstance(config, dict) else {}):
        for key in _MAX_TOKEN_KEYS:
            if _int(source.get(key)) is not None:
                return source[key]
    return None


def _service_tier(result: dict) -> str | None:
    tier = result.get("serviceTier")
    if isinstance(tier, dict):
        tier = tier.get("type")
    return tier if isinstance(tier, str) else None


def _pass(item: Any) -> bool:
    return False


class ConverseStreamHooks(StateStreamHooks):
    """ConverseStream: the call ends on the ``metadata`` event, the last one."""

    __slots__ = ()

    def __init__(self, call: genai_span.LLMCall) -> None:
        super().__init__(call, ConverseStreamState())
        self.on_item = self._observe

    def observe_at_parse(self, stream: Any) -> None:
        """Observe events as botocore parses them (``EventStream._parse_event``), the level at
        which other instrumentations (OpenLLMetry) end their span on ``metadata``: ours then
        ends first, inside theirs, and the coexistence rule drops theirs. Falls back to
        observing through the proxy when botocore lacks the hook."""
        parse = getattr(stream, "_parse_event", None)
        if parse is None:
            return

        def observed(event: Any) -> Any:
            parsed = parse(event)
            self._observe(parsed)
            return parsed

        stream._parse_event = observed
        self.on_item = _pass

    def _observe(self, item: Any) -> bool:
        self.state.add(item)
        if isinstance(item, dict) and "metadata" in item:
            self.on_end(None)  # the last event: the call is complete here
        return False


def _record_converse(call: genai_span.LLMCall, result: dict) -> None:
    stop = result.get("stopReason")
    call.set_response(finish_reasons=[stop] if stop else None, service_tier=_service_tier(result))
    call.read_usage(usage_from_converse, result.get("usage"))


class _Failing(io.RawIOBase):
    """A body whose reads raise the error that reading the real body raised."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self._error = error

    def readable(self) -> bool:
        return True

    def read(self, *args: Any) -> bytes:
        raise self._error


def _record_invoke(call: genai_span.LLMCall, result: dict) -> None:
    from botocore.response import StreamingBody

    body = result.get("body")
    if body is None or not hasattr(body, "read"):
        return
    try:
        data = body.read()
    except Exception as exc:  # the caller must still meet this error when it reads the body
        result["body"] = StreamingBody(_Failing(exc), None)
        call.set_error(exc)
        return
    # The caller gets a fresh body with the very same bytes.
    result["body"] = StreamingBody(io.BytesIO(data), len(data))
    try:
        decoded = json.loads(data)
    except ValueError:
        decoded = None
    headers = (result.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    call.set_response(**invoke_response_facts(decoded), service_tier=_service_tier(result))
    call.read_usage(usage_from_invoke, decoded, headers)


def _begin(instruments: Instruments, client: Any, args: tuple, kwargs: dict) -> genai_span.Begun | None:
    operation = args[0] if args else kwargs.get("operation_name")
    if operation not in OPERATIONS or client.meta.service_model.service_name != SERVICE:
        return None
    params = (args[1] if len(args) > 1 else kwargs.get("api_params")) or {}
    if operation in (CONVERSE, CONVERSE_STREAM):
        max_tokens = (params.get("inferenceConfig") or {}).get("maxTokens")
        prompt = (params.get("messages"), params.get("system"))
    else:
        max_tokens, prompt = _invoke_max_tokens(params.get("body")), params.get("body")
    host, port = genai_span.server_of(getattr(getattr(client, "meta", None), "endpoint_url", None))
    call = genai_span.start_llm_call(
        instruments, provider=PROVIDER, operation=OPERATION, request_model=params.get("modelId"),
        server_address=host, server_port=port, max_tokens=max_tokens,
        stream=operation in (CONVERSE_STREAM, INVOKE_STREAM),
        # measured only when a pre-flight check applies
        estimated_input_tokens=lambda: preflight.estimate_tokens(prompt_chars(prompt)),
    )
    return genai_span.Begun(call, kwargs, operation)


def _finish(call: genai_span.LLMCall, operation: str, result: Any) -> Any:
    if operation == CONVERSE_STREAM and result.get("stream") is not None:
        hooks = ConverseStreamHooks(call)
        hooks.observe_at_parse(result["stream"])
        result["stream"] = SyncStreamProxy(result["stream"], hooks)
        return result
    if operation == INVOKE_STREAM and result.get("body") is not None:
        result["body"] = SyncStreamProxy(result["body"], StateStreamHooks(call, InvokeStreamState()))
        return result
    if operation == CONVERSE:
        _record_converse(call, result)
    elif operation == INVOKE:
        _record_invoke(call, result)
    call.end()
    return result


def make_api_call_wrapper(instruments: Instruments) -> Any:
    return genai_span.llm_call_wrapper(instruments, _begin, _finish)
