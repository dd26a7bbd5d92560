"""OpenTelemetry instrumentation of the Google GenAI SDK (``google-genai``) with cost.

Covers ``client.models.generate_content`` / ``generate_content_stream`` / ``embed_content``
and their ``client.aio`` variants, for the Gemini API (``gen_ai.provider.name`` = ``gcp.gemini``) and
Vertex AI (``gcp.vertex_ai``). One span per billed HTTP request (see ``patch``).
"""

from __future__ import annotations

from functools import partial
from typing import Collection

from tokentrail.instrumentation.base import TokentrailInstrumentor, sync_and_async
from tokentrail.instrumentation.google_genai import patch

_MODELS = "google.genai.models"


class GoogleGenAIInstrumentor(TokentrailInstrumentor):
    provider = "google_genai"
    tracer_name = "tokentrail.instrumentation.google_genai"
    targets = (
        *sync_and_async(_MODELS, "Models._generate_content", "AsyncModels._generate_content", patch.wrapper),
        *sync_and_async(_MODELS, "Models._generate_content_stream", "AsyncModels._generate_content_stream",
                        partial(patch.wrapper, stream=True)),
        *sync_and_async(_MODELS, "Models._embed_content", "AsyncModels._embed_content",
                        partial(patch.wrapper, patch.EMBEDDINGS)),
    )

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("google-genai >= 1.0",)


__all__ = ["GoogleGenAIInstrumentor"]
