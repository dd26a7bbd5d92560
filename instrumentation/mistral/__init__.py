"""OpenTelemetry instrumentation of the Mistral SDK (``mistralai``) with cost.

Covers ``client.chat.complete`` / ``stream`` (and ``complete_async`` / ``stream_async``) and
``client.embeddings.create`` (and ``create_async``); ``gen_ai.provider.name`` = ``mistral_ai``.
"""

from __future__ import annotations

from typing import Collection

from tokentrail.instrumentation.base import Target, TokentrailInstrumentor
from tokentrail.instrumentation.mistral import patch

# The SDK package is ``mistralai.client`` since mistralai 2, ``mistralai`` before.
_CHAT = ("mistralai.client.chat", "mistralai.chat")
_EMBEDDINGS = ("mistralai.client.embeddings", "mistralai.embeddings")


class MistralInstrumentor(TokentrailInstrumentor):
    provider = "mistral"
    tracer_name = "tokentrail.instrumentation.mistral"
    targets = (
        Target(_CHAT, "Chat.complete", patch.wrapper(patch.CHAT)),
        Target(_CHAT, "Chat.complete_async", patch.wrapper(patch.CHAT, is_async=True)),
        Target(_CHAT, "Chat.stream", patch.wrapper(patch.CHAT, stream=True)),
        Target(_CHAT, "Chat.stream_async", patch.wrapper(patch.CHAT, stream=True, is_async=True)),
        Target(_EMBEDDINGS, "Embeddings.create", patch.wrapper(patch.EMBEDDINGS)),
        Target(_EMBEDDINGS, "Embeddings.create_async", patch.wrapper(patch.EMBEDDINGS, is_async=True)),
    )

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("mistralai >= 1.0",)


__all__ = ["MistralInstrumentor"]
