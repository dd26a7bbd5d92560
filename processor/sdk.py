"""Every read of OpenTelemetry SDK internals, in one module; tests/test_processor.py pins each.

The processors need a few things the SDK has no public API for: the processors installed on
a TracerProvider (read, and wrapped in place), a span's attributes as a plain dict, a copy of an ended (immutable) span with
attributes added or another parent, the name of the instrumentation scope of a span, the
processors' ``_on_ending`` hook, the temporality each reader of a MeterProvider asks for, and a
context that makes a metric measurement take no exemplar.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.metrics._internal.instrument import _Counter, _ObservableCounter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.util import BoundedList


def span_processors(tracer_provider: Any) -> tuple[SpanProcessor, ...] | None:
    """The processors added to an SDK TracerProvider (top level, in order); None for any other
    provider (the API's proxy before one is set, a vendor's own)."""
    processors = getattr(getattr(tracer_provider, "_active_span_processor", None), "_span_processors", None)
    return None if processors is None else tuple(processors)


def wrap_span_processors(tracer_provider: Any, wrap: Callable[[SpanProcessor], SpanProcessor]) -> bool:
    """Replace each processor of an SDK TracerProvider by ``wrap(processor)``, in order; False
    for any other provider (nothing changed)."""
    multi = getattr(tracer_provider, "_active_span_processor", None)
    lock = getattr(multi, "_lock", None)
    if lock is None or getattr(multi, "_span_processors", None) is None:
        return False
    with lock:
        multi._span_processors = tuple(wrap(p) for p in multi._span_processors)
    return True


def plain_attributes(span: Any) -> dict[str, Any]:
    """A span's attributes as a new plain dict. ``span.attributes`` is a read-only view of the
    SDK's BoundedAttributes: every key read through it is two Python-level calls."""
    inner = getattr(getattr(span, "_attributes", None), "_dict", None)
    if type(inner) is dict:
        return dict(inner)
    return dict(getattr(span, "attributes", None) or {})


def scope_name(span: Any) -> str:
    """The instrumentation scope name of a span ("" when unknown)."""
    scope = getattr(span, "instrumentation_scope", None) or getattr(span, "instrumentation_info", None)
    return getattr(scope, "name", "") or ""


def on_ending(processor: SpanProcessor | None, span: Span) -> None:
    """Forward the SDK's ``_on_ending`` hook (called as a span ends, before ``on_end``)."""
    hook = getattr(processor, "_on_ending", None)
    if hook is not None:
        hook(span)


_SAME = object()


def enriched_copy(span: ReadableSpan, extra: Mapping[str, Any], *, parent: Any = _SAME) -> ReadableSpan:
    """A new ReadableSpan equal to ``span`` with ``extra`` attributes added (and ``parent``, a
    SpanContext or None, in place of its parent when given).

    Everything else is preserved: name, context, parent, resource, kind, status, times,
    instrumentation scope, events, links, and the dropped attribute/event/link counts. The
    copy is not bound by the span limits: the cost is added even to a full span.
    """
    merged = dict(span.attributes or {})
    merged.update(extra)
    attributes = BoundedAttributes(maxlen=None, attributes=merged, immutable=True)
    attributes.dropped = getattr(span._attributes, "dropped", 0)
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent if parent is _SAME else parent,
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


def counter_temporalities(meter_provider: Any) -> tuple[Any, ...] | None:
    """The aggregation temporalities the readers of an SDK MeterProvider use for counters and
    observable counters (two per reader); None for any other provider or when unknown."""
    storages = getattr(getattr(meter_provider, "_measurement_consumer", None), "_reader_storages", None)
    if storages is None:
        return None
    try:
        return tuple(reader._instrument_class_temporality[kind] for reader in tuple(storages)
                     for kind in (_Counter, _ObservableCounter))
    except (AttributeError, KeyError, TypeError):
        return None


#: For measurements that must take no exemplar. Not an empty Context: the SDK replaces a falsy
#: one by the current context (``context or get_current()``), which would sample the exemplar
#: from whatever span is current; an invalid span makes the trace-based filter skip it.
NO_EXEMPLAR = trace_api.set_span_in_context(trace_api.INVALID_SPAN, Context())
