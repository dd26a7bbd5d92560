"""OpenTelemetry instrumentation of the Google GenAI SDK (``google-genai``) with cost.

Covers ``client.models.generate_content`` / ``generate_content_stream`` / ``embed_content``
and their ``client.aio`` variants, for the Gemini API (``gen_ai.provider.name`` = ``gcp.gemini``) and
Vertex AI (``gcp.vertex_ai``). One span per billed HTTP request (see ``patch``).
"""

from __future__ import annotations

from typing import Collection

from tokentrail.instrumentation.base import Target, TokentrailInstrumentor
from tokentrail.instrumentation.google_genai import patch

_MODELS = "google.genai.models"


class GoogleGenAIInstrumentor(TokentrailInstrumentor):
    provider = "google_genai"
    tracer_name = "tokentrail.instrumentation.google_genai"
    targets = (
        Target(_MODELS, "Models._generate_content", patch.wrapper()),
        Target(_MODELS, "Models._generate_content_stream", patch.wrapper(stream=True)),
        Target(_MODELS, "AsyncModels._generate_content", patch.wrapper(is_async=True)),
        Target(_MODELS, "AsyncModels._generate_content_stream", patch.wrapper(stream=True, is_async=True)),
        Target(_MODELS, "Models._embed_content", patch.wrapper(patch.EMBEDDINGS)),
        Target(_MODELS, "AsyncModels._embed_content", patch.wrapper(patch.EMBEDDINGS, is_async=True)),
    )

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("google-genai >= 1.0",)


__all__ = ["GoogleGenAIInstrumentor"]
