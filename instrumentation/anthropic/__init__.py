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
whenever a TracerProvider is set. For the calls we trace, we suppress that native span (the
SDK's own "no span" path), so there is exactly one LLM span per call and it carries what
pricing needs (the 1-hour cache split and web-search fees the native span lacks). Every
other native span (batches, files, models, count_tokens, ...) is left alone. Without our
instrumentor, the native spans are priced by tokentrail's CostSpanProcessor instead.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Collection

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from tokentrail import breakers
from tokentrail.instrumentation import coexistence
from tokentrail.instrumentation.anthropic import patch

_log = logging.getLogger(__name__)

_instruments = ("anthropic >= 0.40",)
_TRACER_NAME = "tokentrail.instrumentation.anthropic"

# (module, attribute path, wrapper factory)
_REQUEST_TARGETS = (
    ("anthropic._base_client", "SyncAPIClient.request", lambda t: patch.sync_request_wrapper(t)),
    ("anthropic._base_client", "AsyncAPIClient.request", lambda t: patch.async_request_wrapper(t)),
    ("anthropic._response", "APIResponse.parse", lambda t: patch.sync_parse_wrapper),
    ("anthropic._response", "AsyncAPIResponse.parse", lambda t: patch.async_parse_wrapper),
    ("anthropic.resources.messages.batches", "Batches.results", lambda t: patch.batch_results_wrapper(t, False)),
    ("anthropic.resources.messages.batches", "AsyncBatches.results", lambda t: patch.batch_results_wrapper(t, True)),
    ("anthropic.resources.beta.messages.batches", "Batches.results", lambda t: patch.batch_results_wrapper(t, False)),
    ("anthropic.resources.beta.messages.batches", "AsyncBatches.results",
     lambda t: patch.batch_results_wrapper(t, True)),
    # anthropic 2.x native telemetry: only present in SDKs that emit their own spans
    ("anthropic._base_client", "start_api_call_span", lambda t: patch.suppress_native_span),
)


class AnthropicInstrumentor(BaseInstrumentor):
    """Instruments the anthropic SDK with tokentrail LLM spans."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        breakers.install()
        self._patched: list[tuple[str, str]] = []
        if not coexistence.should_instrument("anthropic"):
            _log.info("tokentrail: another Anthropic instrumentation owns the anthropic SDK; not patching")
            return
        tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=kwargs.get("tracer_provider"))
        for module, name, factory in _REQUEST_TARGETS:
            try:
                wrap_function_wrapper(module, name, factory(tracer))
                self._patched.append((module, name))
            except Exception:  # a module or method this SDK version lacks
                _log.debug("tokentrail: could not patch %s.%s", module, name, exc_info=True)
        # one LLM span per user call; the SDK's internal HTTP retries are counted on it
        try:
            from tokentrail.tasks import stainless_retry_wrapper

            wrap_function_wrapper("anthropic._base_client", "BaseClient._build_request", stainless_retry_wrapper)
            self._patched.append(("anthropic._base_client", "BaseClient._build_request"))
        except Exception:
            _log.debug("tokentrail: could not patch the SDK retry loop", exc_info=True)

    def _uninstrument(self, **kwargs: Any) -> None:
        for module, name in getattr(self, "_patched", []):
            owner_name, _, attribute = name.rpartition(".")
            try:
                owner = importlib.import_module(module)
                if owner_name:
                    owner = getattr(owner, owner_name)
                unwrap(owner, attribute)
            except Exception:
                _log.debug("tokentrail: could not unpatch %s.%s", module, name, exc_info=True)
        self._patched = []


__all__ = ["AnthropicInstrumentor"]
