"""Bedrock Runtime usage -> normalised ``Usage``. Pure functions, no boto3 imports.

Bedrock reports ``inputTokens`` WITHOUT the cached parts (``totalTokens`` = input + output +
cacheRead + cacheWrite), so our input is the sum. InvokeModel bodies are each model
family's own format; Bedrock also puts the counts in ``X-Amzn-Bedrock-*-Token-Count``
headers (the only place for Mistral and Cohere) and in the last stream chunk's
``amazon-bedrock-invocationMetrics``. Whatever the shape, streamed and non-streamed calls
of the same request normalise to the same ``Usage``.
"""

from __future__ import annotations

from typing import Any, Mapping

from tokentrail.instrumentation.anthropic.usage import StreamState as AnthropicStreamState
from tokentrail.instrumentation.anthropic.usage import field, usage_from_anthropic
from tokentrail.processor.usage import InvalidUsage, Usage

INVOCATION_METRICS = "amazon-bedrock-invocationMetrics"
_HEADER_PREFIX = "x-amzn-bedrock-"


def _count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidUsage(f"token count {value!r} is not an integer")
    return value


def _usage(input_tokens: Any, output_tokens: Any, cache_read: Any = None, cache_write: Any = None,
           cache_write_1h: int = 0) -> Usage:
    read, write = _count(cache_read), _count(cache_write)
    return Usage(
        input_tokens=_count(input_tokens) + read + write,
        output_tokens=_count(output_tokens),
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=cache_write_1h,
    ).validate()


def usage_from_converse(usage: Any) -> Usage:
    """A Converse ``TokenUsage`` (also the ``metadata`` event of ConverseStream)."""
    if not isinstance(usage, Mapping) or ("inputTokens" not in usage and "outputTokens" not in usage):
        raise InvalidUsage(f"no Converse token usage in {usage!r}")
    one_hour = sum(_count(d.get("inputTokens")) for d in usage.get("cacheDetails") or () if d.get("ttl") == "1h")
    return _usage(usage.get("inputTokens"), usage.get("outputTokens"), usage.get("cacheReadInputTokens"),
                  usage.get("cacheWriteInputTokens"), one_hour)


def usage_from_headers(headers: Mapping[str, str]) -> Usage | None:
    """The token-count headers Bedrock adds to every InvokeModel response (keys lowercase)."""
    def number(name: str) -> int | None:
        raw = headers.get(_HEADER_PREFIX + name)
        return int(raw) if raw is not None and str(raw).strip().isdigit() else None

    input_tokens, output_tokens = number("input-token-count"), number("output-token-count")
    if input_tokens is None and output_tokens is None:
        return None
    return _usage(input_tokens, output_tokens, number("cache-read-input-token-count"),
                  number("cache-write-input-token-count"))


def usage_from_invocation_metrics(metrics: Any) -> Usage:
    if not isinstance(metrics, Mapping):
        raise InvalidUsage(f"invocation metrics {metrics!r} are not an object")
    return _usage(metrics.get("inputTokenCount"), metrics.get("outputTokenCount"),
                  metrics.get("cacheReadInputTokenCount"), metrics.get("cacheWriteInputTokenCount"))


def _nova_usage(usage: Mapping[str, Any]) -> Usage:
    return _usage(usage.get("inputTokens"), usage.get("outputTokens"),
                  usage.get("cacheReadInputTokenCount"), usage.get("cacheWriteInputTokenCount"))


def usage_from_invoke(body: Any, headers: Mapping[str, str]) -> Usage | None:
    """Usage of an InvokeModel response, recognised by the body's shape (works for ARNs and
    inference profiles alike), else from the count headers. Raises ``InvalidUsage``."""
    if isinstance(body, Mapping):
        usage = body.get("usage")
        if isinstance(usage, Mapping) and ("input_tokens" in usage or "output_tokens" in usage):
            return usage_from_anthropic(usage)  # Anthropic Messages body
        if isinstance(usage, Mapping) and "inputTokens" in usage:
            return _nova_usage(usage)  # Amazon Nova
        if "prompt_token_count" in body or "generation_token_count" in body:  # Meta Llama
            return _usage(body.get("prompt_token_count"), body.get("generation_token_count"))
    return usage_from_headers(headers)


def invoke_response_details(body: Any) -> tuple[str | None, str | None, str | None]:
    """(response model, response id, finish reason) of an InvokeModel body, where it says."""
    if not isinstance(body, Mapping):
        return None, None, None
    if body.get("type") == "message":
        return body.get("model"), body.get("id"), body.get("stop_reason")
    reason = body.get("stopReason") or body.get("stop_reason") or body.get("finish_reason")
    outputs = body.get("outputs")
    if reason is None and isinstance(outputs, list) and outputs and isinstance(outputs[0], Mapping):
        reason = outputs[0].get("stop_reason")
    return None, body.get("id") or body.get("generation_id"), reason if isinstance(reason, str) else None


class InvokeStreamState:
    """Folds InvokeModelWithResponseStream chunks (decoded JSON) into the final usage."""

    def __init__(self) -> None:
        self.anthropic = AnthropicStreamState()
        self._anthropic_seen = False
        self._nova_usage: Mapping[str, Any] | None = None
        self._meta_prompt: int | None = None
        self._meta_generation: int | None = None
        self._metrics: Any = None
        self.finish_reason: str | None = None

    def observe(self, chunk: Any) -> None:
        try:
            if not isinstance(chunk, Mapping):
                return
            if INVOCATION_METRICS in chunk:
                self._metrics = chunk[INVOCATION_METRICS]
            kind = chunk.get("type")
            if isinstance(kind, str):
                self._anthropic_seen = self._anthropic_seen or kind == "message_start"
                self.anthropic.observe(chunk)
                return
            if isinstance(chunk.get("metadata"), Mapping) and isinstance(chunk["metadata"].get("usage"), Mapping):
                self._nova_usage = chunk["metadata"]["usage"]
            if isinstance(chunk.get("messageStop"), Mapping):
                self.finish_reason = chunk["messageStop"].get("stopReason")
            if chunk.get("prompt_token_count") is not None:
                self._meta_prompt = chunk["prompt_token_count"]
            if chunk.get("generation_token_count") is not None:
                self._meta_generation = chunk["generation_token_count"]
            reason = chunk.get("stop_reason") or chunk.get("finish_reason")
            outputs = chunk.get("outputs")
            if reason is None and isinstance(outputs, list) and outputs and isinstance(outputs[0], Mapping):
                reason = outputs[0].get("stop_reason")
            if isinstance(reason, str):
                self.finish_reason = reason
        except Exception:
            pass

    def final_usage(self) -> Usage | None:
        """Same precedence as ``usage_from_invoke``: the body's own usage, else Bedrock's metrics."""
        if self._anthropic_seen:
            return self.anthropic.final_usage()
        if self._nova_usage is not None:
            return _nova_usage(self._nova_usage)
        if self._meta_prompt is not None or self._meta_generation is not None:
            return _usage(self._meta_prompt, self._meta_generation)
        if self._metrics is not None:
            return usage_from_invocation_metrics(self._metrics)
        return None

    @property
    def response_model(self) -> str | None:
        return self.anthropic.model

    @property
    def response_id(self) -> str | None:
        return self.anthropic.response_id

    @property
    def stop_reason(self) -> str | None:
        return self.anthropic.stop_reason or self.finish_reason


class ConverseStreamState:
    """Folds ConverseStream events (botocore-parsed dicts) into usage and stop reason."""

    def __init__(self) -> None:
        self.usage: Mapping[str, Any] | None = None
        self.stop_reason: str | None = None

    def observe(self, event: Any) -> None:
        try:
            if "metadata" in event:
                self.usage = field(event["metadata"], "usage")
            elif "messageStop" in event:
                self.stop_reason = field(event["messageStop"], "stopReason")
        except Exception:
            pass

    def final_usage(self) -> Usage | None:
        return None if self.usage is None else usage_from_converse(self.usage)
