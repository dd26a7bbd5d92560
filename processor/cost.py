"""CostSpanProcessor: prices foreign LLM spans and records cost metrics for every LLM span.

Our instrumentations price their spans before ``end()``. Other instrumentations (the official
OpenTelemetry GenAI ones, OpenLLMetry) end spans that carry usage but no cost; since SDK 1.43
an ended span is immutable, so this processor hands the next processor an enriched *copy*
(a new ReadableSpan with everything preserved plus the cost attributes). Every LLM span's
metric points are recorded here exactly once, with the span as exemplar context.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Mapping

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from tokentrail.processor import dedup, sdk
from tokentrail.processor.metrics import record_llm_call
from tokentrail.processor.pricing import ensure_priced
from tokentrail.processor.usage import is_attributed, is_genai_call
from tokentrail.semconv import attributes as attr
from tokentrail.state import register_reset

_logger = logging.getLogger(__name__)

# CostSpanProcessors not shut down: the answer of ``pipeline_active()`` when the global
# provider is not an SDK one (its processors cannot be read).
_running: "weakref.WeakSet[CostSpanProcessor]" = weakref.WeakSet()
register_reset(_running.clear)


def pipeline_active(tracer_provider: Any = None) -> bool:
    """Whether a CostSpanProcessor will see the finished spans of ``tracer_provider`` (the global
    one by default) and record their metrics.

    Instrumentations call ``record_llm_call`` themselves only when this is false, or when their
    span is not recording (processors never see those). For a provider whose processors cannot
    be read: with none given, whether any CostSpanProcessor runs in this process; else false.
    """
    provider = tracer_provider if tracer_provider is not None else trace_api.get_tracer_provider()
    processors = sdk.span_processors(provider)
    if processors is None:
        return tracer_provider is None and bool(_running)
    for processor in processors:  # every call without an exporter of ours asks: a loop, not any(<genexpr>)
        if isinstance(processor, CostSpanProcessor):
            return True
    return False


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
        self._next = next_processor
        self._meter_provider = meter_provider
        self._record_metrics = record_metrics
        _running.add(self)

    @property
    def next_processor(self) -> SpanProcessor | None:
        return self._next

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        dedup.on_start(span)
        if self._next is not None:
            self._next.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        sdk.on_ending(self._next, span)

    def on_end(self, span: ReadableSpan) -> None:
        if dedup.is_duplicate(span):
            return  # another instrumentation's span of a call our span covers (coexistence)
        out = span
        try:
            # its parent may be such a span: keep it under the LLM span
            out = span = dedup.under_exported_parent(span)
            out = self._process(span)
        except Exception:  # never hurt the app: export the original span
            _logger.debug("tokentrail: pricing span %r failed", getattr(span, "name", None), exc_info=True)
        if self._next is not None:
            self._next.on_end(out)

    def _process(self, span: ReadableSpan) -> ReadableSpan:
        attributes = sdk.plain_attributes(span)
        if not is_genai_call(attributes):
            return span
        # on the plain copy plain_attributes made already (not a second one)
        plain, extra = ensure_priced(attributes, span.start_time, copy=False)
        out = span
        if extra:
            # A span that met no AttributionSpanProcessor, or did not look like a call at start.
            if attr.TOKENTRAIL_ATTRIBUTED not in plain:  # on the copy only: metrics see the span was not stamped
                extra[attr.TOKENTRAIL_ATTRIBUTED] = is_attributed(plain)
            out = sdk.enriched_copy(span, extra)
        if self._record_metrics:
            self._record(out, plain, foreign=bool(extra))
        return out

    def _record(self, span: ReadableSpan, attributes: Mapping[str, Any], foreign: bool) -> None:
        duration = None
        if span.start_time is not None and span.end_time is not None:
            duration = (span.end_time - span.start_time) / 1e9
        resource = getattr(span, "resource", None)
        record_llm_call(
            attributes,
            duration,
            meter_provider=self._meter_provider,
            # the span, so the SDK's trace-based exemplar filter links the trace
            context=span.context or None,
            resource_attributes=getattr(resource, "attributes", None) or {},
            # Foreign instrumentations record gen_ai.client.* themselves: don't double them.
            upstream=not foreign,
        )

    def shutdown(self) -> None:
        _running.discard(self)
        if self._next is not None:
            self._next.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._next is not None:
            return self._next.force_flush(timeout_millis)
        return True
