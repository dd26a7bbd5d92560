"""OpenTelemetry instrumentation of the Mistral SDK (``mistralai``) with cost.

Covers ``client.chat.complete`` / ``stream`` (and ``complete_async`` / ``stream_async``) and
``client.embeddings.create`` (and ``create_async``); ``gen_ai.provider.name`` = ``mistral_ai``.
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
from tokentrail.instrumentation.mistral import patch

_log = logging.getLogger(__name__)

# (module, class, method, wrapper factory); module names are relative to the SDK package,
# which is ``mistralai.client`` since mistralai 2 and ``mistralai`` before.
_TARGETS = (
    ("chat", "Chat", "complete", lambda t: patch.unary(t, patch.CHAT)),
    ("chat", "Chat", "complete_async", lambda t: patch.unary_async(t, patch.CHAT)),
    ("chat", "Chat", "stream", patch.stream),
    ("chat", "Chat", "stream_async", patch.stream_async),
    ("embeddings", "Embeddings", "create", lambda t: patch.unary(t, patch.EMBEDDINGS)),
    ("embeddings", "Embeddings", "create_async", lambda t: patch.unary_async(t, patch.EMBEDDINGS)),
)


def _sdk_module(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"mistralai.client.{name}")
    except ImportError:
        return importlib.import_module(f"mistralai.{name}")


class MistralInstrumentor(BaseInstrumentor):
    _instruments = ("mistralai >= 1.0",)

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._instruments

    def _instrument(self, **kwargs: Any) -> None:
        breakers.install()
        self._patched = coexistence.should_instrument("mistral")
        if not self._patched:  # TOKENTRAIL_COEXISTENCE=defer: another instrumentation owns the SDK
            return
        tracer = trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))
        self._targets = []
        for module, owner, name, factory in _TARGETS:
            try:
                wrap_function_wrapper(_sdk_module(module), f"{owner}.{name}", factory(tracer))
                self._targets.append((module, owner, name))
            except Exception:  # a method this SDK version lacks: leave it alone
                _log.debug("tokentrail: could not patch mistralai %s.%s.%s", module, owner, name, exc_info=True)

    def _uninstrument(self, **kwargs: Any) -> None:
        if not getattr(self, "_patched", False):
            return
        for module, owner, name in getattr(self, "_targets", ()):
            unwrap(getattr(_sdk_module(module), owner), name)
        self._targets = []


__all__ = ["MistralInstrumentor"]
