"""AttributionSpanProcessor: stamps the current owner on every span when it starts.

Running at start (not end) is what makes it work for any span, ours or foreign: HTTP, DB and
tool spans inside ``tokentrail.attribute(...)`` or a task are owned too, and so are LLM spans
of other instrumentations, which CostSpanProcessor prices later. Our instrumentations put the
same ``owner_stamp`` in their spans' start attributes, so this processor skips their spans:
each span is stamped once.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from tokentrail.attribution import owner_span_attributes
from tokentrail.processor import exactness
from tokentrail.processor.sdk import scope_name, set_span_attributes, span_processors
from tokentrail.processor.usage import is_attributed, is_genai_call
from tokentrail.semconv import attributes as attr

_logger = logging.getLogger(__name__)

_OUR_INSTRUMENTATION = "tokentrail.instrumentation"


def owner_stamp(attributes: Mapping[str, Any] | None = None, context: Context | None = None) -> dict[str, Any]:
    """What a span starting with ``attributes`` is stamped with: the owner of ``context`` (the
    current one by default, over the ``TOKENTRAIL_ATTRIBUTES`` defaults) and, on a GenAI call,
    ``tokentrail.attributed`` (false without a tenant: unattributed spend stays visible)."""
    stamp = owner_span_attributes(context)
    if is_genai_call(attributes):
        stamp[attr.TOKENTRAIL_ATTRIBUTED] = is_attributed(stamp)
        unverified = exactness.reason()
        if unverified is not None:  # a set-up tokentrail cannot vouch for (processor.exactness)
            stamp[attr.TOKENTRAIL_UNVERIFIED] = unverified
    return stamp


class AttributionSpanProcessor(SpanProcessor):
    """Stamps ``owner_stamp`` on every span at start, except our instrumentations' spans
    (they carry it from their start attributes)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            if scope_name(span).startswith(_OUR_INSTRUMENTATION):
                return
            stamp = owner_stamp(span.attributes)
            if stamp:
                set_span_attributes(span, stamp)
        except Exception:  # never hurt the app
            _logger.debug("tokentrail: attribution on span start failed", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_install_lock = threading.Lock()


def has_processor(tracer_provider: Any, kind: type) -> bool:
    """Whether an SDK TracerProvider already has a processor of ``kind`` (at the top level)."""
    return any(isinstance(p, kind) for p in span_processors(tracer_provider) or ())


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
