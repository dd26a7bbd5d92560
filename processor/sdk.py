"""Every read of OpenTelemetry SDK internals, in one module (bar the composite propagator's list,
``tokentrail.propagation``'s); tests/test_processor.py pins each.

The processors need a few things the SDK has no public API for: the processors installed on
a TracerProvider (read, and wrapped in place), a span's attributes as a plain dict, attributes
set on a live span without the SDK's per-value cleaning, a copy of an ended (immutable) span with
attributes added or another parent, the name of the instrumentation scope of a span, the
processors' ``_on_ending`` hook, a context that makes a metric measurement take no exemplar,
and the aggregations of a histogram or counter (tokentrail's own sums are added to them when a
reader collects).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes, _clean_attribute_value
from opentelemetry.context import Context
from opentelemetry.sdk.metrics._internal._view_instrument_match import _OVERFLOW_ATTRIBUTES, _hash_attributes
from opentelemetry.sdk.metrics._internal.aggregation import _ExplicitBucketHistogramAggregation, _SumAggregation
from opentelemetry.sdk.metrics._internal.exemplar import AlignedHistogramBucketExemplarReservoir
from opentelemetry.sdk.metrics._internal.instrument import _Counter, _Histogram
from opentelemetry.sdk.metrics.export import AggregationTemporality
from opentelemetry.sdk import trace as _sdk_trace
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


# The value types the SDK keeps as they are (a tuple of them too), exact types only: a subclass
# (an IntEnum, a str subclass) or a list is left to the SDK's cleaning.
_CLEAN_TYPES = frozenset((str, bool, int, float))
# the class of the SDK's live spans (an SDK without it: every write through set_attributes)
_Span = getattr(_sdk_trace, "_Span", None)


def set_span_attributes(span: Any, attributes: Mapping[str, Any]) -> None:
    """``span.set_attributes(attributes)`` with the same outcome, written straight into a live SDK
    span's BoundedAttributes when every key is a non-empty str, every value of a type the SDK
    keeps unchanged, and no span limit could drop or cut one: the SDK's cleaning costs about 6k
    instructions per attribute, and a call sets twenty. Anything else goes to ``set_attributes``."""
    if type(span) is _Span and _already_clean(attributes):
        try:
            if _write_clean(span, attributes):
                return
        except AttributeError:  # an SDK without these fields: its own method (over any half write)
            pass
    span.set_attributes(attributes)


def _write_clean(span: Any, attributes: Mapping[str, Any]) -> bool:
    bounded = span._attributes
    if type(bounded) is not BoundedAttributes or bounded.max_value_len is not None:
        return False
    with span._lock:
        inner = bounded._dict
        if (span._end_time is not None or bounded._immutable
                or (bounded.maxlen is not None and len(inner) + len(attributes) > bounded.maxlen)):
            return False
        with bounded._lock:
            for key, value in attributes.items():
                if key in inner:  # as the SDK does: a key set again moves to the end
                    del inner[key]
                inner[key] = value
    return True


def _already_clean(attributes: Mapping[str, Any]) -> bool:
    clean = _CLEAN_TYPES
    for key, value in attributes.items():
        if type(key) is not str or not key:
            return False
        kind = type(value)
        if kind not in clean:
            if kind is not tuple:
                return False
            for item in value:
                if type(item) not in clean:
                    return False
    return True


def scope_name(span: Any) -> str:
    """The instrumentation scope name of a span ("" when unknown). Read from the SDK's fields when
    they are there (each public property is a Python call, and this runs several times per span)."""
    scope = getattr(span, "_instrumentation_scope", None)
    name = getattr(scope, "_name", None)
    if type(name) is str:
        return name
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


#: For measurements that must take no exemplar. Not an empty Context: the SDK replaces a falsy
#: one by the current context (``context or get_current()``), which would sample the exemplar
#: from whatever span is current; an invalid span makes the trace-based filter skip it.
NO_EXEMPLAR = trace_api.set_span_in_context(trace_api.INVALID_SPAN, Context())


# --- histograms and counters: tokentrail sums a call's measurements itself and adds the sums to
# the SDK's own aggregations when a reader collects (processor/metrics.py, Histogram and Sum) ----

def measurement_consumer(meter_provider: Any) -> Any:
    """The object of an SDK MeterProvider that takes measurements and runs collections (it holds
    no reference to the provider); None for any other provider."""
    consumer = getattr(meter_provider, "_measurement_consumer", None)
    return consumer if hasattr(consumer, "_reader_storages") and hasattr(consumer, "_lock") else None


def collection_lock(consumer: Any) -> Any:
    """The lock held through each reader's collection (callbacks, then the aggregations)."""
    return consumer._lock


def exemplar_filter(meter_provider: Any) -> Any:
    """The exemplar filter of an SDK MeterProvider (None when unknown)."""
    return getattr(getattr(meter_provider, "_sdk_config", None), "exemplar_filter", None)


def instrument_enabled(instrument: Any) -> Callable[[], bool] | None:
    """An SDK histogram's or counter's ``_is_enabled`` (False while its meter is disabled); None
    for any other instrument."""
    return instrument._is_enabled if type(instrument) in (_Histogram, _Counter) else None


def clean_attributes(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    """Attributes as the SDK cleans those of a measurement."""
    return _clean_attribute_value(attributes, None)


#: A configuration whose sums tokentrail cannot add for the SDK.
UNSUMMABLE = None
#: The kinds of aggregation tokentrail sums for the SDK (``aggregations``).
HISTOGRAM, SUM = "histogram", "sum"


class AggregationTargets(NamedTuple):
    """Where the measurements of one attribute set of an SDK instrument go: per reader and
    matching view, the SDK's aggregation key (for the readers the provider had then)."""

    storages: Any
    matches: tuple[tuple[Any, Any, dict[str, Any]], ...]


def aggregation_targets(consumer: Any, instrument: Any, attributes: Mapping[str, Any]) -> AggregationTargets | None:
    """The targets of an SDK histogram's or counter's measurements with these (cleaned)
    attributes; UNSUMMABLE when a view's attribute keys drop one of them (several attribute sets
    in one aggregation) or the instrument is not one of the SDK's."""
    if type(instrument) not in (_Histogram, _Counter):
        return UNSUMMABLE
    storages = consumer._reader_storages
    matches = []
    for storage in tuple(storages.values()):
        for match in storage._get_or_init_view_instrument_match(instrument):
            keys = match._view._attribute_keys
            if keys is not None and not keys.issuperset(attributes):
                return UNSUMMABLE
            matches.append((match, _hash_attributes(attributes), dict(attributes)))
    return AggregationTargets(storages, tuple(matches))


def targets_current(consumer: Any, targets: AggregationTargets) -> bool:
    """Whether the provider has the same readers as when the targets were found."""
    return targets.storages is consumer._reader_storages


def aggregations(targets: AggregationTargets | None, kind: str) -> tuple[list[Any], bool] | None:
    """The targets' aggregations, found or created as the SDK does it for a measurement (the
    cardinality limit and its overflow series, the start time), and whether they are a reader's
    overflow series. UNSUMMABLE when the targets are, when one is not of the kind tokentrail sums
    (HISTOGRAM: explicit buckets with the SDK's aligned exemplar reservoir; SUM: a monotonic
    synchronous sum), or when some readers overflow and others do not."""
    if targets is UNSUMMABLE:
        return UNSUMMABLE
    found, overflowed = [], set()
    for match, key, attributes in targets.matches:
        aggregation = match._attributes_aggregation.get(key)
        if aggregation is None:
            with match._lock:
                aggregation = match._get_or_create_aggregation(key, dict(attributes))
        if kind == HISTOGRAM:
            if (type(aggregation) is not _ExplicitBucketHistogramAggregation
                    or type(aggregation._reservoir) is not AlignedHistogramBucketExemplarReservoir):
                return UNSUMMABLE
        elif (type(aggregation) is not _SumAggregation or not aggregation._instrument_is_monotonic
              or aggregation._instrument_aggregation_temporality is not AggregationTemporality.DELTA):
            return UNSUMMABLE
        overflowed.add(aggregation._attributes == _OVERFLOW_ATTRIBUTES != attributes)
        found.append(aggregation)
    if len(overflowed) > 1:
        return UNSUMMABLE
    return found, overflowed == {True}


def histogram_bounds(aggregation: Any) -> tuple[float, ...]:
    return aggregation._boundaries


def add_to_histogram(aggregation: Any, counts: list[int], total: int | float, low: int | float,
                     high: int | float) -> None:
    """Add measurements summed elsewhere to an SDK explicit-bucket aggregation, as its
    ``aggregate`` adds them one by one: bucket counts, sum, min and max."""
    with aggregation._lock:
        if aggregation._value is None:
            aggregation._value = aggregation._get_empty_bucket_counts()
        value = aggregation._value
        for index, count in enumerate(counts):
            if count:
                value[index] += count
        aggregation._sum += total
        if aggregation._record_min_max:
            aggregation._min = min(aggregation._min, low)
            aggregation._max = max(aggregation._max, high)


def add_to_sum(aggregation: Any, total: int | float) -> None:
    """Add measurements summed elsewhere to an SDK sum aggregation, as its ``aggregate`` does."""
    with aggregation._lock:
        if aggregation._value is None:
            aggregation._value = 0
        aggregation._value = aggregation._value + total


def offer_exemplar(aggregation: Any, value: int | float, time_unix_nano: int, attributes: Mapping[str, Any],
                   context: Context) -> None:
    """Offer a measurement to the aggregation's exemplar reservoir, as its ``aggregate`` does."""
    aggregation._reservoir.offer(value, time_unix_nano, attributes, context)
