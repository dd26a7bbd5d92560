"""AttributionSpanProcessor: stamps the current owner on every span when it starts.

Running at start (not end) is what makes it work for any span, ours or foreign: HTTP, DB and
tool spans inside ``tokentrail.attribute(...)`` or a task are owned too, and so are LLM spans
of other instrumentations, which CostSpanProcessor prices later.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from tokentrail.attribution import owner_span_attributes
from tokentrail.semconv import attributes as attr

_logger = logging.getLogger(__name__)

_LLM_MARKERS = (attr.GEN_AI_OPERATION_NAME, attr.GEN_AI_PROVIDER_NAME, attr.GEN_AI_SYSTEM)


def looks_like_llm_span(attributes: Mapping[str, Any] | None) -> bool:
    return bool(attributes) and any(k in attributes for k in _LLM_MARKERS)


class AttributionSpanProcessor(SpanProcessor):
    """Copies the current owner (``tokentrail.attribution.owner_span_attributes()`` over the
    ``TOKENTRAIL_ATTRIBUTES`` defaults) onto every span at start.

    LLM spans with no tenant get ``tokentrail.attributed=false``: unattributed spend stays
    visible instead of disappearing from per-tenant views.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            owner = owner_span_attributes()
            current = span.attributes
            # Our instrumentations stamp the owner at start already: set only what differs.
            missing = {k: v for k, v in owner.items() if current.get(k) != v} if owner else None
            if looks_like_llm_span(current):
                missing = missing or {}
                missing[attr.TOKENTRAIL_ATTRIBUTED] = bool(owner.get(attr.TOKENTRAIL_TENANT))
            if missing:
                span.set_attributes(missing)
        except Exception:  # never hurt the app
            _logger.debug("tokentrail: attribution on span start failed", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_install_lock = threading.Lock()


def _processors_of(tracer_provider: Any) -> tuple:
    active = getattr(tracer_provider, "_active_span_processor", None)
    return tuple(getattr(active, "_span_processors", ()) or ())


def has_processor(tracer_provider: Any, kind: type) -> bool:
    """Whether an SDK TracerProvider already has a processor of ``kind`` (at the top level)."""
    return any(isinstance(p, kind) for p in _processors_of(tracer_provider))


def ensure_installed(tracer_provider: Any = None) -> bool:
    """Add an AttributionSpanProcessor to the SDK TracerProvider (the global one by default)
    unless it has one. For instrumentors' ``instrument()``, so attribution still applies when
    another configurator set the SDK up. Returns True when one is (now) installed.
    """
    try:
        provider = tracer_provider if tracer_provider is not None else trace_api.get_tracer_provider()
        if not hasattr(provider, "add_span_processor"):
            return False  # the API's no-op/proxy provider: nothing to attach to (yet)
        with _install_lock:
            if not has_processor(provider, AttributionSpanProcessor):
                provider.add_span_processor(AttributionSpanProcessor())
        return True
    except Exception:  # never hurt the app
        _logger.debug("tokentrail: could not install AttributionSpanProcessor", exc_info=True)
        return False
