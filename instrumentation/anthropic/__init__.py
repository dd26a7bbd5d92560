"""OpenTelemetry instrumentation of the anthropic SDK.

``AnthropicInstrumentor().instrument(tracer_provider=...)`` traces every Messages call —
``messages.create`` (sync, async, ``stream=True``), the ``messages.stream`` helper,
``parse``, ``beta.messages``, raw responses — made through ``Anthropic``, ``AsyncAnthropic``,
``AnthropicBedrock`` (provider ``aws.bedrock``) and ``AnthropicVertex`` (``gcp.vertex_ai``):
one CLIENT span ``"chat {model}"`` with normalised usage (input includes cache reads and
writes; 5-minute/1-hour writes split; web searches as tool-call fees), owner and cost.
``messages.count_tokens`` is free and gets no span from us. Message Batch results are
priced at the batch tier as they are read (``messages.batches.results``), once per result
per process.

Living with the SDK's own telemetry: anthropic 2.x emits a native span for each API call
whenever a TracerProvider is set. For the calls we trace, the SDK gets a non-recording span
carrying ours instead, so there is exactly one LLM span per call and it carries what pricing
needs (the 1-hour cache split and web-search fees the native span lacks), while the request
keeps its ``traceparent``, ``tracestate`` and ``baggage``. A tracer provider the user gave the
client that is not ours keeps its native spans. Every other native span (batches, files,
models, count_tokens, ...) is left alone. Without our
instrumentor, the native spans are priced by tokentrail's CostSpanProcessor instead.
"""

from __future__ import annotations

from typing import Collection

from tokentrail import tasks
from tokentrail.instrumentation.anthropic import patch
from tokentrail.instrumentation.base import Target, TokentrailInstrumentor, sync_and_async

_CLIENT = "anthropic._base_client"
_RESPONSE = "anthropic._response"
_TRACING = "anthropic._tracing"
_BATCHES = "anthropic.resources.messages.batches"
_BETA_BATCHES = "anthropic.resources.beta.messages.batches"


class AnthropicInstrumentor(TokentrailInstrumentor):
    """Instruments the anthropic SDK with tokentrail LLM spans."""

    provider = "anthropic"
    tracer_name = "tokentrail.instrumentation.anthropic"
    targets = (
        *sync_and_async(_CLIENT, "SyncAPIClient.request", "AsyncAPIClient.request", patch.request_wrapper),
        *sync_and_async(_RESPONSE, "APIResponse.parse", "AsyncAPIResponse.parse", patch.parse_method, plain=True),
        *sync_and_async(_BATCHES, "Batches.results", "AsyncBatches.results", patch.batch_results_wrapper,
                        optional=True),
        *sync_and_async(_BETA_BATCHES, "Batches.results", "AsyncBatches.results", patch.batch_results_wrapper,
                        optional=True),
        # anthropic 2.x native telemetry: only present in SDKs that emit their own spans
        Target(_CLIENT, "start_api_call_span", patch.native_span_wrapper, optional=True, plain=True),
        Target(_TRACING, "trace_headers", patch.trace_headers_function, optional=True, plain=True),
        Target(_TRACING, "set_url_attributes", patch.url_attributes_function, optional=True, plain=True),
        # one LLM span per user call; the SDK's internal HTTP retries are counted on it
        Target(_CLIENT, "BaseClient._build_request", lambda instruments: tasks.stainless_retry_method, optional=True,
               plain=True),
    )

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("anthropic >= 0.40",)


__all__ = ["AnthropicInstrumentor"]
