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
import logging
from typing import Any

from tokentrail import preflight
from tokentrail.instrumentation import genai_span
from tokentrail.instrumentation.bedrock.usage import (
    ConverseStreamState,
    InvokeStreamState,
    invoke_response_details,
    usage_from_converse,
    usage_from_invoke,
)
from tokentrail.instrumentation.streams import LLMCallStreamHooks, SyncStreamProxy
from tokentrail.processor.usage import InvalidUsage

_log = logging.getLogger(__name__)

SERVICE = "bedrock-runtime"
PROVIDER = "aws.bedrock"
OPERATION = "chat"
CONVERSE, CONVERSE_STREAM = "Converse", "ConverseStream"
INVOKE, INVOKE_STREAM = "InvokeModel", "InvokeModelWithResponseStream"
OPERATIONS = frozenset((CONVERSE, CONVERSE_STREAM, INVOKE, INVOKE_STREAM))
# where each model family puts its output-token limit in an InvokeModel body
_MAX_TOKEN_KEYS = ("max_tokens", "max_gen_len", "maxTokens", "max_new_tokens", "maxTokenCount")


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, dict):
        return sum(_chars(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_chars(v) for v in value)
    return 0


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _invoke_request(params: dict) -> tuple[int | None, int]:
    """(max output tokens, estimated input tokens) of an InvokeModel body."""
    body = params.get("body")
    try:
        decoded = json.loads(body) if isinstance(body, (str, bytes, bytearray)) else None
    except ValueError:
        decoded = None
    max_tokens = None
    if isinstance(decoded, dict):
        config = decoded.get("inferenceConfig") or decoded.get("textGenerationConfig") or {}
        for source in (decoded, config if isinstance(config, dict) else {}):
            for key in _MAX_TOKEN_KEYS:
                if _int(source.get(key)) is not None:
                    max_tokens = source[key]
                    break
            if max_tokens is not None:
                break
    return max_tokens, preflight.estimate_tokens(_chars(body))


def error_kind(exc: BaseException) -> BaseException | str:
    """botocore errors by their AWS code (ThrottlingException, ...), others by class."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        if isinstance(code, str) and code:
            return code
    return exc


def _service_tier(result: dict) -> str | None:
    tier = result.get("serviceTier")
    if isinstance(tier, dict):
        tier = tier.get("type")
    return tier if isinstance(tier, str) else None


class _BedrockStreamHooks(LLMCallStreamHooks):
    __slots__ = ()

    def on_end(self, error: BaseException | None) -> None:
        if self.call.ended:
            return
        try:
            self.record()
        except Exception:
            _log.debug("tokentrail: recording a Bedrock stream failed", exc_info=True)
        self.call.end(error=None if error is None else error_kind(error))


class ConverseStreamHooks(_BedrockStreamHooks):
    __slots__ = ("state", "at_parse")

    def __init__(self, call: genai_span.LLMCall) -> None:
        super().__init__(call)
        self.state = ConverseStreamState()
        self.at_parse = False

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
        self.at_parse = True

    def _observe(self, item: Any) -> None:
        self.state.observe(item)
        if isinstance(item, dict) and "metadata" in item:
            self.on_end(None)  # the last event: the call is complete here

    def on_item(self, item: Any) -> bool:
        if not self.at_parse:
            self._observe(item)
        return False

    def drain_before_close(self) -> bool:
        # Callers often stop at messageStop; the usage is in the metadata event right after it.
        return self.state.stop_reason is not None and self.state.usage is None

    def record(self) -> None:
        state = self.state
        self.call.set_response(finish_reasons=[state.stop_reason] if state.stop_reason else None)
        try:
            self.call.set_usage(state.final_usage())
        except InvalidUsage:
            _log.debug("tokentrail: malformed ConverseStream usage %r", state.usage)


class InvokeStreamHooks(_BedrockStreamHooks):
    __slots__ = ("state",)

    def __init__(self, call: genai_span.LLMCall) -> None:
        super().__init__(call)
        self.state = InvokeStreamState()

    def on_item(self, item: Any) -> bool:
        chunk = item.get("chunk") if isinstance(item, dict) else None
        if chunk and chunk.get("bytes"):
            try:
                self.state.observe(json.loads(chunk["bytes"]))
            except ValueError:
                pass
        return False

    def record(self) -> None:
        state = self.state
        self.call.set_response(model=state.response_model, response_id=state.response_id,
                               finish_reasons=[state.stop_reason] if state.stop_reason else None)
        try:
            self.call.set_usage(state.final_usage())
        except InvalidUsage:
            _log.debug("tokentrail: malformed InvokeModel stream usage")


def _record_converse(call: genai_span.LLMCall, result: dict) -> None:
    stop = result.get("stopReason")
    call.set_response(finish_reasons=[stop] if stop else None, service_tier=_service_tier(result))
    try:
        call.set_usage(usage_from_converse(result.get("usage")))
    except InvalidUsage:
        _log.debug("tokentrail: malformed Converse usage %r", result.get("usage"))


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
        call.set_error(error_kind(exc))
        return
    # The caller gets a fresh body with the very same bytes.
    result["body"] = StreamingBody(io.BytesIO(data), len(data))
    try:
        decoded = json.loads(data)
    except ValueError:
        decoded = None
    headers = (result.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    model, response_id, reason = invoke_response_details(decoded)
    call.set_response(model=model, response_id=response_id, finish_reasons=[reason] if reason else None,
                      service_tier=_service_tier(result))
    try:
        call.set_usage(usage_from_invoke(decoded, headers))
    except InvalidUsage:
        _log.debug("tokentrail: malformed InvokeModel usage")


def make_api_call_wrapper(tracer: Any):
    def wrapper(wrapped, instance, args, kwargs):
        try:
            operation = args[0] if args else kwargs.get("operation_name")
            if (operation not in OPERATIONS or instance.meta.service_model.service_name != SERVICE
                    or genai_span.should_skip()):
                return wrapped(*args, **kwargs)
            params = (args[1] if len(args) > 1 else kwargs.get("api_params")) or {}
            if operation in (CONVERSE, CONVERSE_STREAM):
                max_tokens = _int((params.get("inferenceConfig") or {}).get("maxTokens"))
                estimate = preflight.estimate_tokens(_chars(params.get("messages")) + _chars(params.get("system")))
            else:
                max_tokens, estimate = _invoke_request(params)
            host = None
            try:
                from urllib.parse import urlsplit

                host = urlsplit(instance.meta.endpoint_url).hostname
            except Exception:
                pass
        except Exception:
            _log.debug("tokentrail: could not read a Bedrock request", exc_info=True)
            return wrapped(*args, **kwargs)
        streamed = operation in (CONVERSE_STREAM, INVOKE_STREAM)
        call = genai_span.start_llm_call(
            tracer, provider=PROVIDER, operation=OPERATION, request_model=params.get("modelId"),
            server_address=host, max_tokens=max_tokens, stream=streamed, estimated_input_tokens=estimate,
        )
        try:
            with call.activate():
                result = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.end(error=error_kind(exc))
            raise
        try:
            if operation == CONVERSE:
                _record_converse(call, result)
            elif operation == INVOKE:
                _record_invoke(call, result)
            elif operation == CONVERSE_STREAM and result.get("stream") is not None:
                hooks = ConverseStreamHooks(call)
                try:
                    hooks.observe_at_parse(result["stream"])
                except Exception:
                    _log.debug("tokentrail: could not hook EventStream parsing", exc_info=True)
                result["stream"] = SyncStreamProxy(result["stream"], hooks)
                return result
            elif operation == INVOKE_STREAM and result.get("body") is not None:
                result["body"] = SyncStreamProxy(result["body"], InvokeStreamHooks(call))
                return result
        except Exception:
            _log.debug("tokentrail: recording a Bedrock response failed", exc_info=True)
        call.end()
        return result

    return wrapper
