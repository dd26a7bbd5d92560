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

import logging
from typing import Any, Collection

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from tokentrail import breakers
from tokentrail.instrumentation import coexistence
from tokentrail.instrumentation.bedrock import patch

_log = logging.getLogger(__name__)

_instruments = ("botocore >= 1.34",)
_TRACER_NAME = "tokentrail.instrumentation.bedrock"


class BedrockInstrumentor(BaseInstrumentor):
    """Instruments boto3's bedrock-runtime client with tokentrail LLM spans."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        breakers.install()
        self._patched = False
        if not coexistence.should_instrument("bedrock"):
            _log.info("tokentrail: another Bedrock instrumentation owns bedrock-runtime; not patching")
            return
        tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=kwargs.get("tracer_provider"))
        wrap_function_wrapper("botocore.client", "BaseClient._make_api_call", patch.make_api_call_wrapper(tracer))
        self._patched = True

    def _uninstrument(self, **kwargs: Any) -> None:
        if getattr(self, "_patched", False):
            import botocore.client

            unwrap(botocore.client.BaseClient, "_make_api_call")
        self._patched = False


__all__ = ["BedrockInstrumentor"]
