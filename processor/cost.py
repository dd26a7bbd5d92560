"""CostSpanProcessor: prices foreign LLM spans and records cost metrics for every LLM span.

Our instrumentations price their spans before ``end()``. Other instrumentations (the official
OpenTelemetry GenAI ones, OpenLLMetry) end spans that carry usage but no cost; since SDK 1.43
an ended span is immutable, so this processor hands the next processor an enriched *copy*
(a new ReadableSpan with everything preserved plus the cost attributes). Every LLM span's
metric points are recorded here exactly once, with the span as exemplar context.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.util.types import Attributes

from tokentrail.processor import dedup
from tokentrail.processor import metrics as _metrics
from tokentrail.processor.attribution import _processors_of
from tokentrail.processor.pricing import is_llm_span, price_span
from tokentrail.semconv import attributes as attr

_logger = logging.getLogger(__name__)

_active_lock = threading.Lock()
_active = 0


def pipeline_active(tracer_provider: Any = None) -> bool:
    """Whether a CostSpanProcessor will see finished spans (and record their metrics).

    With a ``tracer_provider``: whether that SDK provider has one. Without: whether any is
    installed in this process. Instrumentations call ``record_llm_call`` themselves only when
    this is false, or when their span is not recording (processors never see those).
    """
    if tracer_provider is not None:
        return any(isinstance(p, CostSpanProcessor) for p in _processors_of(tracer_provider))
    return _active > 0


def metrics_handled_by_pipeline(span: Any, tracer_provider: Any = None) -> bool:
    """True when a CostSpanProcessor will record this span's metrics when it ends."""
    try:
        return bool(span.is_recording()) and pipeline_active(tracer_provider)
    except Exception:
        return False


def enriched_copy(span: ReadableSpan, extra: Mapping[str, Any]) -> ReadableSpan:
    """A new ReadableSpan equal to ``span`` with ``extra`` attributes added.

    Everything else is preserved: name, context, parent, resource, kind, status, times,
    instrumentation scope, events, links, and the dropped attribute/event/link counts.
    """
    original = span._attributes  # BoundedAttributes on SDK spans: keeps the dropped count
    merged = dict(span.attributes or {})
    merged.update(extra)
    attributes: Attributes
    try:
        from opentelemetry.attributes import BoundedAttributes

        attributes = BoundedAttributes(maxlen=None, attributes=merged, immutable=True)
        attributes.dropped = getattr(original, "dropped", 0)
    except Exception:  # pragma: no cover - older SDKs
        attributes = merged
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=_bounded_copy(span._events),
        links=_bounded_copy(span._links),
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
        instrumentation_info=getattr(span, "_instrumentation_info", None),
    )


def _bounded_copy(items: Any) -> Any:
    if isinstance(items, BoundedList):
        copy = BoundedList.from_seq(None, tuple(items))
        copy.dropped = items.dropped
        return copy
    return tuple(items or ())


class CostSpanProcessor(SpanProcessor):
    """Wraps the export processor (``CostSpanProcessor(BatchSpanProcessor(exporter))``).

    ``record_metrics=False`` for a second wrapper on the same provider (several exporters), so
    each LLM call is counted once. ``next_processor=None`` only records metrics.
    """

    def __init__(
        self,
        next_processor: SpanProcessor | None = None,
        *,
        meter_provider: metrics_api.MeterProvider | None = None,
        record_metrics: bool = True,
    ) -> None:
        global _active
        self._next = next_processor
        self._meter_provider = meter_provider
        self._record_metrics = record_metrics
        self._shut = False
        with _active_lock:
            _active += 1

    @property
    def next_processor(self) -> SpanProcessor | None:
        return self._next

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        dedup.on_start(span)
        if self._next is not None:
            self._next.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        hook = getattr(self._next, "_on_ending", None)
        if hook is not None:
            hook(span)

    def on_end(self, span: ReadableSpan) -> None:
        if dedup.is_duplicate(span):
            return  # another instrumentation's span of a call our span covers (coexistence)
        out = span
        try:
            out = self._process(span)
        except Exception:  # never hurt the app: export the original span
            _logger.debug("tokentrail: pricing span %r failed", getattr(span, "name", None), exc_info=True)
        if self._next is not None:
            self._next.on_end(out)

    def _process(self, span: ReadableSpan) -> ReadableSpan:
        attributes = span.attributes
        if not attributes or not is_llm_span(attributes):
            return span
        # One plain-dict copy: the ~30 lookups of pricing and metrics on the SDK's
        # BoundedAttributes view are Python-level calls (a raised KeyError per missing key).
        plain = dict(attributes)
        extra = price_span(plain, span.start_time)
        out = span
        if extra:
            # Foreign span: it did not stamp tokentrail.attributed (our instrumentations'
            # spans get it from AttributionSpanProcessor at start).
            if attr.TOKENTRAIL_ATTRIBUTED not in plain:
                extra = {**extra, attr.TOKENTRAIL_ATTRIBUTED: bool(plain.get(attr.TOKENTRAIL_TENANT))}
            out = enriched_copy(span, extra)
            plain.update(extra)
        if self._record_metrics:
            self._record(out, plain, foreign=bool(extra))
        return out

    def _record(self, span: ReadableSpan, attributes: Mapping[str, Any], foreign: bool) -> None:
        duration = None
        if span.start_time is not None and span.end_time is not None:
            duration = (span.end_time - span.start_time) / 1e9
        # A context carrying the span, so the SDK's trace-based exemplar filter links the trace.
        ctx = trace_api.set_span_in_context(trace_api.NonRecordingSpan(span.context)) if span.context else None
        resource = getattr(span, "resource", None)
        _metrics.record_llm_call(
            attributes,
            duration,
            meter_provider=self._meter_provider,
            context=ctx,
            resource_attributes=getattr(resource, "attributes", None) or {},
            # Foreign instrumentations record gen_ai.client.* themselves: don't double them.
            upstream=not foreign,
        )

    def shutdown(self) -> None:
        global _active
        with _active_lock:
            if not self._shut:
                self._shut = True
                _active -= 1
        if self._next is not None:
            self._next.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._next is not None:
            return self._next.force_flush(timeout_millis)
        return True
