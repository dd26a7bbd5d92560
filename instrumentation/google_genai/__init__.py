"""OpenTelemetry instrumentation of the Google GenAI SDK (``google-genai``) with cost.

Covers ``client.models.generate_content`` / ``generate_content_stream`` / ``embed_content``
and their ``client.aio`` variants, for the Gemini API (``gen_ai.provider.name`` = ``gcp.gemini``) and
Vertex AI (``gcp.vertex_ai``). One span per billed HTTP request (see ``patch``).
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
from tokentrail.instrumentation.google_genai import patch

_log = logging.getLogger(__name__)

_MODULE = "google.genai.models"
_TARGETS = (
    ("Models._generate_content", patch.generate_content),
    ("Models._generate_content_stream", patch.generate_content_stream),
    ("AsyncModels._generate_content", patch.generate_content_async),
    ("AsyncModels._generate_content_stream", patch.generate_content_stream_async),
    ("Models._embed_content", patch.embed_content),
    ("AsyncModels._embed_content", patch.embed_content_async),
)


class GoogleGenAIInstrumentor(BaseInstrumentor):
    _instruments = ("google-genai >= 1.0",)

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._instruments

    def _instrument(self, **kwargs: Any) -> None:
        breakers.install()
        self._patched = coexistence.should_instrument("google_genai")
        if not self._patched:  # TOKENTRAIL_COEXISTENCE=defer: another instrumentation owns the SDK
            return
        tracer = trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))
        self._targets = []
        for target, factory in _TARGETS:
            try:
                wrap_function_wrapper(_MODULE, target, factory(tracer))
                self._targets.append(target)
            except Exception:  # a method this SDK version lacks: leave it alone
                _log.debug("tokentrail: could not patch %s.%s", _MODULE, target, exc_info=True)

    def _uninstrument(self, **kwargs: Any) -> None:
        if not getattr(self, "_patched", False):
            return
        from google.genai import models

        for target in getattr(self, "_targets", ()):
            owner, name = target.split(".")
            unwrap(getattr(models, owner), name)
        self._targets = []


__all__ = ["GoogleGenAIInstrumentor"]
