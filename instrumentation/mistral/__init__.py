"""OpenTelemetry instrumentation of the Mistral SDK (``mistralai``) with cost.

Covers ``client.chat.complete`` / ``stream`` (and ``complete_async`` / ``stream_async``) and
``client.embeddings.create`` (and ``create_async``); ``gen_ai.provider.name`` = ``mistral_ai``.
"""

from __future__ import annotations

from functools import partial
from typing import Collection

from tokentrail.instrumentation.base import TokentrailInstrumentor, sync_and_async
from tokentrail.instrumentation.mistral import patch

# The SDK package is ``mistralai.client`` since mistralai 2, ``mistralai`` before.
_CHAT = ("mistralai.client.chat", "mistralai.chat")
_EMBEDDINGS = ("mistralai.client.embeddings", "mistralai.embeddings")


class MistralInstrumentor(TokentrailInstrumentor):
    provider = "mistral"
    tracer_name = "tokentrail.instrumentation.mistral"
    targets = (
        *sync_and_async(_CHAT, "Chat.complete", "Chat.complete_async", partial(patch.wrapper, patch.CHAT)),
        *sync_and_async(_CHAT, "Chat.stream", "Chat.stream_async", partial(patch.wrapper, patch.CHAT, stream=True)),
        *sync_and_async(_EMBEDDINGS, "Embeddings.create", "Embeddings.create_async",
                        partial(patch.wrapper, patch.EMBEDDINGS)),
    )

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("mistralai >= 1.0",)


__all__ = ["MistralInstrumentor"]
