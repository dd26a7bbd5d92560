"""OpenTelemetry instrumentation of the openai SDK (OpenAI and OpenAI-compatible endpoints).

``OpenAIInstrumentor().instrument(tracer_provider=...)`` patches chat.completions
(create, parse, and so stream), responses (create, parse, and so stream; beta.responses),
embeddings and legacy completions, sync and async, including ``with_raw_response`` /
``with_streaming_response``. Each call yields one CLIENT span ``"{operation} {model}"`` with
usage, owner and cost attributes.

Modules: ``patch`` (wrappers, request planning), ``usage`` (pure usage extraction),
``streaming`` (stream hooks, result recording), ``providers`` (base_url -> provider),
``content`` (opt-in message content), ``batch`` (Batch API results).
Batch API results are priced at the batch tier when their output file is read
(``files.content``; see ``batch``).

Environment:
- ``TOKENTRAIL_OPENAI_INJECT_STREAM_USAGE=false``: do not add
  ``stream_options.include_usage`` to streamed chat calls (streamed spans then have no usage
  unless the caller asked for it).
- ``TOKENTRAIL_OPENAI_PROVIDER``: force the provider name (see ``providers``).
- ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``: message content is never recorded
  unless this is true.

Coexistence: before patching, ``tokentrail.instrumentation.coexistence.should_instrument
("openai")`` is consulted when that module exists; it may return False to leave the SDK to
another OpenAI instrumentation (whose spans our processor then prices). At call time our
wrappers pass through when OpenTelemetry's suppress-instrumentation flag is set or when the
call is nested inside another tokentrail LLM span.
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
from tokentrail.instrumentation.openai import batch, patch

_log = logging.getLogger(__name__)

_instruments = ("openai >= 1.40",)
_TRACER_NAME = "tokentrail.instrumentation.openai"


class OpenAIInstrumentor(BaseInstrumentor):
    """Instruments the openai SDK with tokentrail LLM spans."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        breakers.install()
        if not coexistence.should_instrument("openai"):
            _log.info("tokentrail: another OpenAI instrumentation owns the openai SDK; not patching")
            self._patched: list[tuple[str, str]] = []
            return
        tracer_provider = kwargs.get("tracer_provider")
        self._instruments = instruments = patch.Instruments(
            trace.get_tracer(_TRACER_NAME, tracer_provider=tracer_provider),
            tracer_provider=tracer_provider,
            meter_provider=kwargs.get("meter_provider"),
        )
        self._patched = []
        for module, name, kind, is_async in patch.TARGETS:
            factory = patch.async_wrapper if is_async else patch.sync_wrapper
            try:
                wrap_function_wrapper(module, name, factory(instruments, kind))
                self._patched.append((module, name))
            except Exception:  # a method this SDK version lacks
                _log.debug("tokentrail: could not patch %s.%s", module, name, exc_info=True)
        # Batch API results are priced (batch tier) when their output file is downloaded.
        for name, is_async in (("Files.content", False), ("AsyncFiles.content", True)):
            try:
                wrap_function_wrapper("openai.resources.files", name, batch.files_content_wrapper(instruments, is_async))
                self._patched.append(("openai.resources.files", name))
            except Exception:
                _log.debug("tokentrail: could not patch openai.resources.files.%s", name, exc_info=True)
        # one LLM span per user call; the SDK's internal HTTP retries are counted on it
        try:
            from tokentrail.tasks import stainless_retry_wrapper

            wrap_function_wrapper("openai._base_client", "BaseClient._build_request", stainless_retry_wrapper)
            self._patched.append(("openai._base_client", "BaseClient._build_request"))
        except Exception:
            _log.debug("tokentrail: could not patch the SDK retry loop", exc_info=True)

    def _uninstrument(self, **kwargs: Any) -> None:
        import importlib

        instruments = getattr(self, "_instruments", None)
        if instruments is not None:
            instruments.active = False

        for module, name in getattr(self, "_patched", []):
            owner_name, _, method = name.rpartition(".")
            try:
                owner = getattr(importlib.import_module(module), owner_name)
                unwrap(owner, method)
            except Exception:
                _log.debug("tokentrail: could not unpatch %s.%s", module, name, exc_info=True)
        self._patched = []


__all__ = ["OpenAIInstrumentor"]
