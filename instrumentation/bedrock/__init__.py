"""OpenTelemetry instrumentation of Amazon Bedrock Runtime through boto3/botocore.

``BedrockInstrumentor().instrument(tracer_provider=...)`` traces ``converse``,
``converse_stream``, ``invoke_model`` and ``invoke_model_with_response_stream`` on every
``bedrock-runtime`` client, for Anthropic, Meta Llama, Amazon Nova, Mistral and Cohere
bodies: one CLIENT span ``"chat {modelId}"`` (provider ``aws.bedrock``) with normalised
usage (input includes ``cacheReadInputTokens`` and ``cacheWriteInputTokens``; 1-hour writes
from ``cacheDetails``), owner and cost. The model id is recorded as given (regional
inference profiles such as ``us.``/``eu.``/``apac.`` are resolved by pricing).

Like opentelemetry-instrumentation-botocore, it wraps ``BaseClient._make_api_call``.
Errors are recorded with their AWS error code as ``error.type``.
"""

from __future__ import annotations

from typing import Collection

from tokentrail.instrumentation.base import Target, TokentrailInstrumentor
from tokentrail.instrumentation.bedrock import patch


class BedrockInstrumentor(TokentrailInstrumentor):
    """Instruments boto3's bedrock-runtime client with tokentrail LLM spans."""

    provider = "bedrock"
    tracer_name = "tokentrail.instrumentation.bedrock"
    targets = (Target("botocore.client", "BaseClient._make_api_call", patch.make_api_call_wrapper),)

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("botocore >= 1.34",)


__all__ = ["BedrockInstrumentor"]
