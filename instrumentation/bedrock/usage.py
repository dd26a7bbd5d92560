"""Bedrock Runtime usage -> normalised ``Usage``. Pure functions, no boto3 imports.

Bedrock reports ``inputTokens`` WITHOUT the cached parts (``totalTokens`` = input + output +
cacheRead + cacheWrite), so our input is the sum. InvokeModel bodies are each model
family's own format; Bedrock also puts the counts in ``X-Amzn-Bedrock-*-Token-Count``
headers (the only place for Mistral and Cohere) and in the last stream chunk's
``amazon-bedrock-invocationMetrics``. Whatever the shape, streamed and non-streamed calls
of the same request normalise to the same ``Usage``.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from tokentrail.instrumentation.anthropic.usage import MessageStreamState, usage_beside_cache, usage_from_anthropic
from tokentrail.instrumentation.fields import block, count, field, items, reported
from tokentrail.instrumentation.streams import StreamState
from tokentrail.processor.usage import Usage

INVOCATION_METRICS = "amazon-bedrock-invocationMetrics"
_HEADER_PREFIX = "x-amzn-bedrock-"


def usage_from_converse(usage: Any) -> Usage | None:
    """A Converse ``TokenUsage`` (also the ``metadata`` event of ConverseStream); None when absent."""
    found = reported(usage, "inputTokens", "outputTokens")
    if found is None:
        return None
    one_hour = sum(count(field(d, "inputTokens")) for d in items(usage, "cacheDetails")
                   if field(d, "ttl") == "1h")
    return usage_beside_cache(*found, field(usage, "cacheReadInputTokens"), field(usage, "cacheWriteInputTokens"),
                              one_hour)


def usage_from_headers(headers: Mapping[str, str]) -> Usage | None:
    """The token-count headers Bedrock adds to every InvokeModel response (keys lowercase)."""
    found = reported(headers, _HEADER_PREFIX + "input-token-count", _HEADER_PREFIX + "output-token-count")
    if found is None:
        return None
    return usage_beside_cache(*found, headers.get(_HEADER_PREFIX + "cache-read-input-token-count"),
                              headers.get(_HEADER_PREFIX + "cache-write-input-token-count"))


def usage_from_invocation_metrics(metrics: Any) -> Usage:
    metrics = block(metrics) or {}
    return usage_beside_cache(metrics.get("inputTokenCount"), metrics.get("outputTokenCount"),
                              metrics.get("cacheReadInputTokenCount"), metrics.get("cacheWriteInputTokenCount"))


def _nova_usage(usage: Mapping[str, Any]) -> Usage:
    return usage_beside_cache(usage.get("inputTokens"), usage.get("outputTokens"),
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
            return usage_beside_cache(body.get("prompt_token_count"), body.get("generation_token_count"))
    return usage_from_headers(headers)


def _stop_reason(body: Mapping[str, Any]) -> str | None:
    reason = body.get("stopReason") or body.get("stop_reason") or body.get("finish_reason")
    outputs = body.get("outputs")
    if reason is None and isinstance(outputs, list) and outputs and isinstance(outputs[0], Mapping):
        reason = outputs[0].get("stop_reason")
    return reason if isinstance(reason, str) else None


def invoke_response_facts(body: Any) -> dict[str, Any]:
    """``LLMCall.set_response`` arguments of an InvokeModel body, where it says them."""
    if not isinstance(body, Mapping):
        return {}
    if body.get("type") == "message":
        model, response_id, reason = body.get("model"), body.get("id"), body.get("stop_reason")
    else:
        model, response_id, reason = None, body.get("id") or body.get("generation_id"), _stop_reason(body)
    return {"model": model, "response_id": response_id, "finish_reasons": [reason] if reason else None}


class InvokeStreamState(StreamState):
    """Folds InvokeModelWithResponseStream events (``{"chunk": {"bytes": b"<json>"}}``)."""

    __slots__ = ("anthropic", "_anthropic_seen", "_nova_usage", "_meta_prompt", "_meta_generation", "_metrics",
                 "finish_reason")

    def __init__(self) -> None:
        self.anthropic = MessageStreamState()
        self._anthropic_seen = False
        self._nova_usage: Mapping[str, Any] | None = None
        self._meta_prompt: Any = None
        self._meta_generation: Any = None
        self._metrics: Any = None
        self.finish_reason: str | None = None

    def add(self, event: Any) -> None:
        chunk = event.get("chunk") if isinstance(event, dict) else None
        if chunk and chunk.get("bytes"):
            try:
                self._fold(json.loads(chunk["bytes"]))
            except Exception:  # a chunk we cannot read must still reach the caller untouched
                pass

    def _fold(self, chunk: Any) -> None:
        if not isinstance(chunk, Mapping):
            return
        if INVOCATION_METRICS in chunk:
            self._metrics = chunk[INVOCATION_METRICS]
        if isinstance(chunk.get("type"), str):  # an Anthropic Messages event
            self._anthropic_seen = self._anthropic_seen or chunk["type"] == "message_start"
            self.anthropic.add(chunk)
            return
        if isinstance(chunk.get("metadata"), Mapping) and isinstance(chunk["metadata"].get("usage"), Mapping):
            self._nova_usage = chunk["metadata"]["usage"]
        if isinstance(chunk.get("messageStop"), Mapping):
            self.finish_reason = chunk["messageStop"].get("stopReason")
        if chunk.get("prompt_token_count") is not None:
            self._meta_prompt = chunk["prompt_token_count"]
        if chunk.get("generation_token_count") is not None:
            self._meta_generation = chunk["generation_token_count"]
        self.finish_reason = _stop_reason(chunk) or self.finish_reason

    def usage(self) -> Usage | None:
        """Same precedence as ``usage_from_invoke``: the body's own usage, else Bedrock's metrics."""
        if self._anthropic_seen:
            return self.anthropic.usage()
        if self._nova_usage is not None:
            return _nova_usage(self._nova_usage)
        if self._meta_prompt is not None or self._meta_generation is not None:
            return usage_beside_cache(self._meta_prompt, self._meta_generation)
        if self._metrics is not None:
            return usage_from_invocation_metrics(self._metrics)
        return None

    def response(self) -> dict[str, Any]:
        stop = self.anthropic.stop_reason or self.finish_reason
        return {"model": self.anthropic.model, "response_id": self.anthropic.response_id,
                "finish_reasons": [stop] if stop else None}


class ConverseStreamState(StreamState):
    """Folds ConverseStream events (botocore-parsed dicts) into usage and stop reason."""

    __slots__ = ("usage_block", "stop_reason")

    def __init__(self) -> None:
        self.usage_block: Any = None
        self.stop_reason: str | None = None

    def add(self, event: Any) -> None:
        try:
            if "metadata" in event:
                self.usage_block = field(event["metadata"], "usage")
            elif "messageStop" in event:
                self.stop_reason = field(event["messageStop"], "stopReason")
        except Exception:
            pass

    def response(self) -> dict[str, Any]:
        return {"finish_reasons": [self.stop_reason] if self.stop_reason else None}

    def usage(self) -> Usage | None:
        return usage_from_converse(self.usage_block)
