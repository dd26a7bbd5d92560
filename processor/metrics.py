"""Cost and token metrics: instruments, SDK views (buckets, attribute allowlist, cardinality
limit) and ``record_llm_call``, the one function that turns a finished LLM call into points.

Metric attributes are an allowlist enforced twice: ``metric_attributes`` only copies allowed
keys, and the SDK ``View``s (``metric_views``) keep only those keys and cap each stream with
the SDK's aggregation cardinality limit, so one noisy dimension cannot explode a backend.

The counters and histograms are ``Sum`` and ``Histogram``: tokentrail sums each call's
measurements per attribute set itself (a dict update, where a full SDK measurement costs ten
times more) and adds the sums to the SDK's own aggregations when a reader collects.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import weakref
from bisect import bisect_left
from time import time_ns
from typing import Any, Iterable, Mapping

from opentelemetry import context as context_api
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, TraceBasedExemplarFilter
from opentelemetry.trace import SpanContext
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from tokentrail import config
from tokentrail.processor import sdk
from tokentrail.processor.sdk import NO_EXEMPLAR
from tokentrail.processor.usage import InvalidUsage, Usage, is_attributed
from tokentrail.semconv import attributes as attr
from tokentrail.semconv import metrics as names
from tokentrail.state import BoundedMemo

_logger = logging.getLogger(__name__)

METER_NAME = "tokentrail"

#: USD-sized buckets: a tenth of a cent up to a $50 call.
COST_BUCKETS_USD = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0)
#: GenAI semantic-convention advice for the token histograms.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576,
                 4194304, 16777216, 67108864)
#: GenAI semantic-convention advice for the duration histograms.
DURATION_BUCKETS_S = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
                      10.24, 20.48, 40.96, 81.92)

#: Attributes copied from the span onto every metric point (the allowlist).
ALLOWED_ATTRIBUTES = (
    attr.GEN_AI_PROVIDER_NAME,
    attr.GEN_AI_REQUEST_MODEL,
    attr.GEN_AI_OPERATION_NAME,
    attr.TOKENTRAIL_TENANT,
    attr.TOKENTRAIL_FEATURE,
    attr.TOKENTRAIL_TEAM,
    attr.DEPLOYMENT_ENVIRONMENT_NAME,
    attr.TOKENTRAIL_COST_STATUS,
    attr.ERROR_TYPE,
    attr.TOKENTRAIL_ATTRIBUTED,
)

_ALLOWED = frozenset(ALLOWED_ATTRIBUTES)
#: Dimensions of the upstream gen_ai.client.* points (a subset of the allowlist), plus the
#: upstream server.address and server.port read from the span.
_UPSTREAM = (attr.GEN_AI_PROVIDER_NAME, attr.GEN_AI_REQUEST_MODEL, attr.GEN_AI_OPERATION_NAME,
             attr.ERROR_TYPE, attr.DEPLOYMENT_ENVIRONMENT_NAME)
_SERVER = (attr.SERVER_ADDRESS, attr.SERVER_PORT)

#: Upstream's opt-in to the latest GenAI conventions (a comma-separated list, as the official
#: instrumentations read it): ``gen_ai_latest_experimental`` emits the gen_ai.client.inference.*
#: and gen_ai.client.embeddings.* metrics instead of gen_ai.client.token.usage and
#: gen_ai.client.operation.duration.
ENV_SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
GEN_AI_LATEST = "gen_ai_latest_experimental"
_EMBEDDINGS = "embeddings"
#: Not useful on token counts (a failed call's tokens are still tokens).
_NOT_ON_TOKENS = frozenset({attr.ERROR_TYPE})
_NANO = 1_000_000_000


def metric_views(cardinality_limit: int | None = None) -> list[View]:
    """SDK views for our instruments: buckets, allowlisted attribute keys, cardinality limit."""
    limit = cardinality_limit or config.cardinality_limit()
    base = frozenset(ALLOWED_ATTRIBUTES)
    # The upstream gen_ai.client.* histograms get no view: other instrumentations create
    # instruments of the same name, and a view matching one of them makes the SDK warn about
    # conflicting identities. Ours carry only allowlisted attributes by construction
    # (``metric_attributes``), semconv buckets by advice, and the reader's default limit.
    spec = (
        (names.TOKENTRAIL_COST, base, COST_BUCKETS_USD),
        (names.TOKENTRAIL_TOKENS, base | {attr.TOKENTRAIL_TOKEN_TYPE}, None),
        (names.TOKENTRAIL_CALLS_UNPRICED, base, None),
        (names.TOKENTRAIL_CACHE_SAVINGS, base, None),
        (names.TOKENTRAIL_COST_RETRIES, base, None),
        (names.TOKENTRAIL_COST_FALLBACKS, base, None),
    )
    views = []
    for name, keys, buckets in spec:
        kwargs: dict[str, Any] = {}
        if buckets is not None:
            kwargs["aggregation"] = ExplicitBucketHistogramAggregation(boundaries=buckets)
        views.append(View(instrument_name=name, meter_name=METER_NAME, attribute_keys=set(keys),
                          aggregation_cardinality_limit=limit, **kwargs))
    return views


#: The SDK's default cap on attribute sets per stream (no view, no reader setting).
_SDK_DEFAULT_CARDINALITY_LIMIT = 2000
_OVERFLOW = {"otel.metric.overflow": True}


def _key(attributes: Mapping[str, Any]) -> Any:
    try:
        return frozenset(attributes.items())
    except TypeError:  # a list value (the SDK turns it into a tuple)
        return frozenset((k, tuple(v) if isinstance(v, list) else v) for k, v in attributes.items())


_OVERFLOW_KEY = _key(_OVERFLOW)


class _Summed:
    """An SDK synchronous instrument whose measurements tokentrail sums itself, per attribute set,
    and adds to the SDK's own aggregations when a reader collects (``flush``, called back by the
    provider's collection): a dict update per measurement instead of a full SDK measurement
    (attribute cleaning, hashing, view matching, exemplar filter and reservoir, per reader).

    The SDK still creates each series (views, cardinality limit and overflow, start time) when
    its first measurement comes, under the provider's collection lock, so no collection sees a
    series without it; each SDK series gets the sum of its own measurements in their order, so
    a reader sees the same values, to the float bit. Anything the SDK would take otherwise goes
    to the SDK's own method: a value it refuses (negative, not finite), a disabled meter,
    another aggregation or exemplar reservoir, a view that merges attribute sets.
    """

    __slots__ = ("_instrument", "_consumer", "_lock", "_collecting", "_enabled", "_series", "_cap", "_sync",
                 "_traced", "_sample", "_order")
    _kind = ""  # sdk.HISTOGRAM or sdk.SUM

    def __init__(self, instrument: Any, consumer: Any, exemplar_filter: Any, cap: int) -> None:
        self._instrument = instrument
        self._consumer = consumer  # the SDK's measurement consumer: no reference to the provider
        self._lock = threading.Lock()
        self._collecting = sdk.collection_lock(consumer)
        self._enabled = sdk.instrument_enabled(instrument)
        self._series: dict[Any, Any] = {}
        self._cap = cap
        # the trace-based filter's answer depends on the context only (_in_sampled_span)
        self._traced = isinstance(exemplar_filter, TraceBasedExemplarFilter)
        self._sample = getattr(exemplar_filter, "should_sample", None)
        self._sync = self._enabled is None or self._sample is None
        self._order = itertools.count()  # exemplar offers, in the order they were made

    def _sdk(self, amount: int | float, attributes: Any, context: Any) -> None:
        raise NotImplementedError

    def _open(self, key: Any, amount: int | float, attributes: Mapping[str, Any], context: Any, now: int,
              order: int | None, extra: tuple | None = None) -> None:
        """Add one measurement of an attribute set not seen yet (``extra``: one more attribute,
        a name and its value), opening its series first."""
        if extra is not None:
            attributes = {**attributes, extra[0]: extra[1]}
        with self._collecting, self._lock:
            series = self._series.get(key)
            if series is None and not self._sync:
                series = self._start(key, attributes)
            if series is not None:
                series.add(amount, context, now, order, attributes)
                return
        self._sdk(amount, attributes, context)

    def _start(self, key: Any, attributes: Mapping[str, Any]) -> Any:
        """With both locks held: the series of a new attribute set, created in the SDK; None to
        leave it to the SDK's own method (no reader yet, or not summable here)."""
        cleaned = sdk.clean_attributes(attributes)
        found = targets = None
        if len(self._series) < self._cap:
            targets = sdk.aggregation_targets(self._consumer, self._instrument, cleaned)
            found = sdk.aggregations(targets, self._kind)
            if found is sdk.UNSUMMABLE:
                self._sync = True
                return None
        if found is None or found[1]:  # past our cap, or the SDK's: its overflow series
            series = self._series.get(_OVERFLOW_KEY)
            if series is None:
                series = self._new(_OVERFLOW_KEY, _OVERFLOW, overflow=True)
            if series is not None and found is not None:  # past our cap, no more keys: memory stays bounded
                self._series[key] = series
            return series
        return self._new(key, cleaned, targets, found)

    def _new(self, key: Any, attributes: Mapping[str, Any], targets: Any = None, found: Any = None,
             overflow: bool = False) -> Any:
        if targets is None:
            targets = sdk.aggregation_targets(self._consumer, self._instrument, attributes)
            found = sdk.aggregations(targets, self._kind)
        if found is sdk.UNSUMMABLE:
            self._sync = True
            return None
        if not found[0]:  # no reader yet: the SDK drops it too
            return None
        series = self._series_for(attributes, targets, found[0], overflow)
        if series is not None:
            self._series[key] = series
        return series

    def _series_for(self, attributes: Mapping[str, Any], targets: Any, aggregations: list, overflow: bool) -> Any:
        raise NotImplementedError

    def flush(self) -> None:
        """Add what was recorded since the last flush to the SDK's aggregations (every reader's)."""
        with self._lock:
            due = [(series, series.take()) for series in dict.fromkeys(self._series.values()) if series.count]
        offers = []
        for series, taken in due:
            targets = series.targets
            if not sdk.targets_current(self._consumer, targets):  # readers added or removed since
                targets = series.targets = sdk.aggregation_targets(self._consumer, self._instrument, series.attributes)
            found = sdk.aggregations(targets, self._kind)
            if found is sdk.UNSUMMABLE:  # a reader added since, with another aggregation
                self._sync = True
                _logger.warning("tokentrail: %s changed aggregation; its points since the last collection "
                                "are lost, later ones are recorded by the SDK", self._instrument.name)
                continue
            for aggregation in found[0]:
                offers.extend((offer, aggregation) for offer in series.merge(aggregation, taken))
        # in the order made, as the SDK's reservoirs met them
        offers.sort(key=_first_of_first)
        for (_, amount, now, attributes, context), aggregation in offers:
            sdk.offer_exemplar(aggregation, amount, now, attributes, _as_context(context))


class Histogram(_Summed):
    """A Histogram summed by tokentrail: per attribute set bucket counts, sum, min, max and
    the exemplar offers (the SDK's aligned reservoir keeps the last of each bucket)."""

    __slots__ = ("_bounds",)
    _kind = sdk.HISTOGRAM

    def __init__(self, instrument: Any, consumer: Any, exemplar_filter: Any, cap: int) -> None:
        super().__init__(instrument, consumer, exemplar_filter, cap)
        self._bounds: tuple[float, ...] = ()

    def record(self, amount: int | float, attributes: Mapping[str, Any] | None = None, context: Any = None,
               key: Any = None) -> None:
        """``Histogram.record``; ``key``: ``_key(attributes)``, when the caller has it. ``context``
        may also be the SpanContext of the span the point belongs to: the Context for its
        exemplar is then made only for the exemplar kept (at the flush)."""
        # ``not 0 <= amount < inf`` is also true of nan: the SDK warns and drops such values
        if self._sync or not 0 <= amount < math.inf or not self._enabled():
            self._instrument.record(amount, attributes, context=_as_context(context))
            return
        if attributes is None:
            attributes = {}
        if context is None:
            context = context_api.get_current()
        now, order = 0, None
        if self._traced:
            if type(context) is SpanContext:  # the trace-based filter's answer for NonRecordingSpan(it)
                if context.trace_flags.sampled:
                    now, order = time_ns(), next(self._order)
            elif context is not NO_EXEMPLAR and _in_sampled_span(context):
                now, order = time_ns(), next(self._order)
        else:
            context = _as_context(context)
            now = time_ns()
            if self._sample(amount, now, attributes, context):
                order = next(self._order)
        if key is None:
            key = _key(attributes)
        with self._lock:
            series = self._series.get(key)
            if series is not None:
                series.add(amount, context, now, order, attributes)
                return
        self._open(key, amount, attributes, context, now, order)

    def _sdk(self, amount: int | float, attributes: Any, context: Any) -> None:
        self._instrument.record(amount, attributes, context=_as_context(context))

    def _series_for(self, attributes: Mapping[str, Any], targets: Any, aggregations: list, overflow: bool) -> Any:
        bounds = {sdk.histogram_bounds(aggregation) for aggregation in aggregations}
        if len(bounds) != 1 or (self._bounds and bounds != {self._bounds}):
            self._sync = True
            return None
        self._bounds = bounds.pop()
        return _Buckets(attributes, targets, self._bounds, overflow, self._traced)


class Sum(_Summed):
    """A monotonic Counter summed by tokentrail per attribute set. Takes no exemplar (tokentrail's
    counters are added outside any span: ``NO_EXEMPLAR``); a measurement that would take one is
    left to the SDK, and with any filter but the trace-based or always-off one, all are."""

    __slots__ = ()
    _kind = sdk.SUM

    def __init__(self, instrument: Any, consumer: Any, exemplar_filter: Any, cap: int) -> None:
        super().__init__(instrument, consumer, exemplar_filter, cap)
        if not (self._traced or isinstance(exemplar_filter, AlwaysOffExemplarFilter)):
            self._sync = True

    def add(self, amount: int | float, attributes: Mapping[str, Any] | None = None, context: Any = None,
            key: Any = None) -> None:
        """``Counter.add``; ``key``: ``_key(attributes)``, when the caller has it."""
        if self._sync or not 0 <= amount < math.inf or not self._enabled() or (
                context is not NO_EXEMPLAR and self._traced and _in_sampled_span(context or context_api.get_current())):
            self._instrument.add(amount, attributes, context=context)
            return
        if attributes is None:
            attributes = {}
        if key is None:
            key = _key(attributes)
        with self._lock:
            series = self._series.get(key)
            if series is not None:
                series.sum += amount
                series.count += 1
                return
        self._open(key, amount, attributes, context, 0, None)

    def add_each(self, attributes: Mapping[str, Any], name: str, amounts: Iterable[tuple[Any, int | float]],
                 key: Any = None) -> None:
        """``add(amount, {**attributes, name: value}, NO_EXEMPLAR)`` for each (value, amount),
        with ``attributes`` hashed once and the lock taken once (the token types of one call)."""
        base = _key(attributes) if key is None else key
        new = []
        summable = not self._sync and self._enabled()
        with self._lock:
            for value, amount in amounts:
                series = self._series.get((base, value)) if summable and 0 <= amount < math.inf else False
                if series:
                    series.sum += amount
                    series.count += 1
                else:
                    new.append((series, value, amount))
        for series, value, amount in new:
            if series is None:
                self._open((base, value), amount, attributes, NO_EXEMPLAR, 0, None, (name, value))
            else:
                self._instrument.add(amount, {**attributes, name: value}, context=NO_EXEMPLAR)

    def _sdk(self, amount: int | float, attributes: Any, context: Any) -> None:
        self._instrument.add(amount, attributes, context=context)

    def _series_for(self, attributes: Mapping[str, Any], targets: Any, aggregations: list, overflow: bool) -> Any:
        return _Total(attributes, targets)


_last_context: tuple[Any, bool] = (None, False)


def _in_sampled_span(context: Context) -> bool:
    """The SDK's trace-based exemplar filter, for a context; the last answer is kept (a call's
    cost and duration points are taken in one context)."""
    global _last_context
    last = _last_context
    if last[0] is context:
        return last[1]
    if context is NO_EXEMPLAR:
        return False
    span = trace_api.get_current_span(context)
    sampled = span is not trace_api.INVALID_SPAN and span.get_span_context().trace_flags.sampled
    _last_context = (context, sampled)
    return sampled


def _as_context(context: Any) -> Any:
    """A Context carrying the span of a SpanContext (see ``Histogram.record``); anything else as it is."""
    if type(context) is SpanContext:
        return trace_api.set_span_in_context(trace_api.NonRecordingSpan(context))
    return context


def _first_of_first(item: tuple) -> Any:
    return item[0][0]


class _Total:
    """One SDK series of a Sum, since the last flush."""

    __slots__ = ("attributes", "targets", "sum", "count")

    def __init__(self, attributes: Mapping[str, Any], targets: Any) -> None:
        self.attributes = attributes
        self.targets = targets  # where the SDK takes them: found once (sdk.aggregation_targets)
        self.sum: int | float = 0  # as the SDK sums: exact ints stay ints
        self.count = 0

    def add(self, amount: int | float, context: Any, now: int, order: int | None, attributes: Any) -> None:
        self.sum += amount
        self.count += 1

    def take(self) -> int | float:
        taken, self.sum, self.count = self.sum, 0, 0
        return taken

    def merge(self, aggregation: Any, taken: int | float) -> tuple:
        sdk.add_to_sum(aggregation, taken)
        return ()


class _Buckets:
    """One SDK series of a Histogram, since the last flush."""

    __slots__ = ("attributes", "targets", "bounds", "overflow", "traced", "counts", "sum", "min", "max", "count",
                 "exemplars")

    def __init__(self, attributes: Mapping[str, Any], targets: Any, bounds: tuple[float, ...], overflow: bool,
                 traced: bool) -> None:
        self.attributes = attributes
        self.targets = targets  # where the SDK takes them: found once (sdk.aggregation_targets)
        self.bounds = bounds
        self.overflow = overflow  # many attribute sets: each exemplar keeps its own
        self.traced = traced  # offers only from sampled spans (the trace-based filter)
        self._reset()

    def _reset(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum: int | float = 0  # as the SDK sums: exact ints stay ints
        self.min: int | float = math.inf
        self.max: int | float = -math.inf
        self.count = 0
        self.exemplars: dict[int, tuple] = {}

    def add(self, amount: int | float, context: Any, now: int, order: int | None, attributes: Mapping[str, Any]) -> None:
        bucket = bisect_left(self.bounds, amount)
        self.counts[bucket] += 1
        self.sum += amount
        self.count += 1
        if amount < self.min:
            self.min = amount
        if amount > self.max:
            self.max = amount
        if order is not None:
            offered = sdk.clean_attributes(attributes) if self.overflow else self.attributes
            offer = (order, amount, now, offered, context)
            # The SDK's reservoir keeps the last offer of each bucket, but the trace and span of
            # the last one in a span when the last offer is in none (an always-on filter).
            spanned = offer if self.traced or trace_api.get_current_span(context) is not trace_api.INVALID_SPAN else None
            if spanned is None:
                spanned = self.exemplars.get(bucket, (None, None))[1]
            self.exemplars[bucket] = (offer, spanned)

    def take(self) -> tuple:
        offers = []
        for offer, spanned in self.exemplars.values():
            if spanned is not None and spanned is not offer:
                offers.append(spanned)
            offers.append(offer)
        taken = (self.counts, self.sum, self.min, self.max, offers)
        self._reset()
        return taken

    def merge(self, aggregation: Any, taken: tuple) -> list:
        counts, total, low, high, offers = taken
        sdk.add_to_histogram(aggregation, counts, total, low, high)
        return offers


#: The counters (Instruments attribute, name, unit, description).
_COUNTERS = (
    ("tokens", names.TOKENTRAIL_TOKENS, "{token}", "Tokens by tokentrail.token.type"),
    # The share of spend that was retries, fallbacks and cache savings (dashboards), without
    # the retry attempt or fallback model as metric labels.
    ("retries", names.TOKENTRAIL_COST_RETRIES, "USD", "USD of LLM calls that were retries"),
    ("fallbacks", names.TOKENTRAIL_COST_FALLBACKS, "USD", "USD of fallback LLM calls"),
    ("cache_savings", names.TOKENTRAIL_CACHE_SAVINGS, "USD", "USD saved by prompt-cache reads"),
)


class _Plain:
    """An instrument of the API as such, with the ``key`` argument of Histogram and Sum (a
    MeterProvider that is not the SDK's)."""

    __slots__ = ("_instrument",)

    def __init__(self, instrument: Any) -> None:
        self._instrument = instrument

    def record(self, amount: int | float, attributes: Mapping[str, Any] | None = None, context: Any = None,
               key: Any = None) -> None:
        self._instrument.record(amount, attributes, context=_as_context(context))

    def add(self, amount: int | float, attributes: Mapping[str, Any] | None = None, context: Any = None,
            key: Any = None) -> None:
        self._instrument.add(amount, attributes, context=context)

    def add_each(self, attributes: Mapping[str, Any], name: str, amounts: Iterable[tuple[Any, int | float]],
                 key: Any = None) -> None:
        for value, amount in amounts:
            self._instrument.add(amount, {**attributes, name: value}, context=NO_EXEMPLAR)


# By MeterProvider, for as long as it lives (not forgotten by tokentrail.state.reset(): the
# provider's aggregations keep what they were given): its summed instruments by SDK instrument,
# flushed by one callback registered on it.
_books: "weakref.WeakKeyDictionary[Any, _Book]" = weakref.WeakKeyDictionary()
_books_lock = threading.Lock()


def _summed_for(meter_provider: Any, meter: metrics_api.Meter) -> Any:
    """A function giving the Histogram or Sum of each SDK histogram or counter of this provider
    (a _Plain for a provider that is not the SDK's)."""
    consumer = sdk.measurement_consumer(meter_provider)
    exemplar_filter = sdk.exemplar_filter(meter_provider)
    if consumer is None or exemplar_filter is None:
        return _Plain
    try:
        book = _books.get(meter_provider)
    except TypeError:  # not weakly referenceable
        return _Plain
    if book is None:
        with _books_lock:
            book = _books.get(meter_provider)
            if book is None:
                book = _books[meter_provider] = _Book()
                meter.create_observable_gauge(names.TOKENTRAIL_SUMS_COLLECT, callbacks=[book.flush],
                                              unit="1", description="Never reports a point")
    cap = max(config.cardinality_limit(), _SDK_DEFAULT_CARDINALITY_LIMIT)

    def summed(instrument: Any) -> Any:
        with _books_lock:
            found = book.summed.get(instrument)
            if found is None:
                kind = Histogram if isinstance(instrument, metrics_api.Histogram) else Sum
                found = book.summed[instrument] = kind(instrument, consumer, exemplar_filter, cap)
        return found
    return summed


class _Book:
    """A provider's summed instruments, and the collection callback that flushes them."""

    __slots__ = ("summed",)

    def __init__(self) -> None:
        self.summed: dict[Any, _Summed] = {}

    def flush(self, options: CallbackOptions) -> Iterable[Observation]:
        for summed in tuple(self.summed.values()):
            summed.flush()
        return ()


class Instruments:
    """The instruments of one MeterProvider."""

    __slots__ = ("cost", "tokens", "unpriced", "latest", "token_usage", "duration", "inference_duration",
                 "inference_input", "inference_output", "embeddings_duration", "embeddings_input", "retries",
                 "fallbacks", "cache_savings")

    def __init__(self, meter_provider: metrics_api.MeterProvider | None = None) -> None:
        meter = metrics_api.get_meter(METER_NAME, meter_provider=meter_provider)
        summed = _summed_for(meter_provider, meter)
        self.latest = gen_ai_latest()
        # Bucket advice too, so the buckets are right even when another configurator built
        # the MeterProvider without our views.
        self.cost = summed(meter.create_histogram(
            names.TOKENTRAIL_COST, unit="USD", description="Cost of one LLM call in USD",
            explicit_bucket_boundaries_advisory=COST_BUCKETS_USD))
        self.unpriced = meter.create_counter(
            names.TOKENTRAIL_CALLS_UNPRICED, unit="{call}",
            description="LLM calls whose model is not on the rate card")
        # One generation of the upstream GenAI metrics, never both (no extra points per call).
        if self.latest:
            self.inference_duration = summed(_duration(meter, names.GEN_AI_CLIENT_INFERENCE_DURATION,
                                                       "GenAI client inference operation duration"))
            self.inference_input = summed(_tokens(meter, names.GEN_AI_CLIENT_INFERENCE_OPERATION_INPUT_TOKENS,
                                                  "Input tokens used per inference operation"))
            self.inference_output = summed(_tokens(meter, names.GEN_AI_CLIENT_INFERENCE_OPERATION_OUTPUT_TOKENS,
                                                   "Output tokens used per inference operation"))
            self.embeddings_duration = summed(_duration(meter, names.GEN_AI_CLIENT_EMBEDDINGS_DURATION,
                                                        "GenAI client embeddings operation duration"))
            self.embeddings_input = summed(_tokens(meter, names.GEN_AI_CLIENT_EMBEDDINGS_OPERATION_INPUT_TOKENS,
                                                   "Input tokens used per embeddings operation"))
        else:
            self.token_usage = summed(_tokens(meter, names.GEN_AI_CLIENT_TOKEN_USAGE,
                                              "Number of input and output tokens used"))
            self.duration = summed(_duration(meter, names.GEN_AI_CLIENT_OPERATION_DURATION, "GenAI operation duration"))
        counters = {key: summed(meter.create_counter(name, unit=unit, description=description))
                    for key, name, unit, description in _COUNTERS}
        self.tokens = counters["tokens"]
        self.retries = counters["retries"]
        self.fallbacks = counters["fallbacks"]
        self.cache_savings = counters["cache_savings"]


def gen_ai_latest() -> bool:
    """Whether ``OTEL_SEMCONV_STABILITY_OPT_IN`` asks for the latest GenAI conventions."""
    raw = os.environ.get(ENV_SEMCONV_OPT_IN) or ""
    return GEN_AI_LATEST in (value.strip() for value in raw.split(","))


def _tokens(meter: metrics_api.Meter, name: str, description: str) -> metrics_api.Histogram:
    return meter.create_histogram(name, unit="{token}", description=description,
                                  explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)


def _duration(meter: metrics_api.Meter, name: str, description: str) -> metrics_api.Histogram:
    return meter.create_histogram(name, unit="s", description=description,
                                  explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S)


# By MeterProvider; created after a tokentrail.state.reset() again, so the opt-in is read anew.
_instruments: BoundedMemo[Any, Instruments] = BoundedMemo(64)


def instruments_for(meter_provider: metrics_api.MeterProvider | None = None) -> Instruments:
    """Instruments for a MeterProvider (the global one by default), created once per provider."""
    provider = meter_provider if meter_provider is not None else metrics_api.get_meter_provider()
    return _instruments.get(provider, Instruments)


def metric_attributes(attributes: Mapping[str, Any], resource_attributes: Mapping[str, Any] | None = None
                      ) -> dict[str, Any]:
    """The allowlisted point attributes of one LLM call (unattributed when no tenant)."""
    out = {k: attributes[k] for k in ALLOWED_ATTRIBUTES if attributes.get(k) is not None}
    if attr.GEN_AI_PROVIDER_NAME not in out and attr.GEN_AI_SYSTEM in attributes:
        out[attr.GEN_AI_PROVIDER_NAME] = attributes[attr.GEN_AI_SYSTEM]
    if attr.DEPLOYMENT_ENVIRONMENT_NAME not in out and resource_attributes:
        env = resource_attributes.get(attr.DEPLOYMENT_ENVIRONMENT_NAME)
        if env is not None:
            out[attr.DEPLOYMENT_ENVIRONMENT_NAME] = env
    # TOKENTRAIL_ATTRIBUTES defaults, for calls whose span never met AttributionSpanProcessor. A span
    # stamped at start (tokentrail.attributed) carries them already: no environment read per call.
    if attr.TOKENTRAIL_ATTRIBUTED not in attributes:
        for key, value in config.static_attributes().items():
            if key in _ALLOWED and key not in out:
                out[key] = value
    out[attr.TOKENTRAIL_ATTRIBUTED] = is_attributed(out)
    return out


def cost_usd(attributes: Mapping[str, Any]) -> float | None:
    """The call's USD cost as a float, converted once from exact nano-USD when present."""
    nano = attributes.get(attr.TOKENTRAIL_COST_NANO_USD)
    if isinstance(nano, int) and not isinstance(nano, bool):
        return _plausible_usd(nano / _NANO)  # int / int is correctly rounded: the closest float to the exact value
    amount = attributes.get(attr.GEN_AI_USAGE_COST_AMOUNT)
    if isinstance(amount, (int, float)) and not isinstance(amount, bool):
        return _plausible_usd(float(amount))
    return None


#: No one call costs more (MAX_TOKENS_PER_CALL tokens at $1,000 per million is $100,000).
MAX_CALL_USD = 1_000_000.0


def _plausible_usd(usd: float) -> float | None:
    # A forged or broken amount (inf, nan, 1e300, negative) must not poison the cumulative sums.
    return usd if 0.0 <= usd <= MAX_CALL_USD else None


def _global_resource_attributes() -> Mapping[str, Any] | None:
    resource = getattr(trace_api.get_tracer_provider(), "resource", None)
    return getattr(resource, "attributes", None)


def record_llm_call(
    attributes: Mapping[str, Any],
    duration_s: float | None = None,
    *,
    meter_provider: metrics_api.MeterProvider | None = None,
    context: Context | SpanContext | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    upstream: bool = True,
) -> None:
    """Record the metric points of one finished LLM call from its (priced) span attributes.

    Used by CostSpanProcessor for every LLM span, and by instrumentations only when no
    CostSpanProcessor will see their span (``tokentrail.processor.cost.pipeline_active()``).
    ``context`` carries the span so SDK exemplars link the trace (defaults to the current
    context), or is the span's SpanContext (the exemplar's Context is then made only when
    kept). ``upstream=False`` skips the gen_ai.client.* histograms, for foreign spans whose
    instrumentation records those itself. Never raises.
    """
    try:
        _record(attributes, duration_s, meter_provider, context, resource_attributes, upstream)
    except Exception:  # never hurt the app
        _logger.debug("tokentrail: recording LLM call metrics failed", exc_info=True)


def _record(attributes, duration_s, meter_provider, context, resource_attributes, upstream) -> None:
    inst = instruments_for(meter_provider)
    if resource_attributes is None:
        resource_attributes = _global_resource_attributes()
    points = _points_of(attributes, resource_attributes)
    if context is None:
        context = context_api.get_current()
    # Exemplars (trace links) on the points one drills down from: cost, unpriced calls and
    # duration. The other points take none: the SDK's exemplar reservoir is a large part of
    # each measurement's cost, and the cost point of the same call already links it.
    _record_cost(inst, attributes, points, context)
    try:
        usage = Usage.from_attributes(attributes)
    except InvalidUsage:
        usage = None
    if usage is not None:
        _record_tokens(inst, usage, points)
    if upstream:
        _record_upstream(inst, usage, duration_s, points, context)


class _Points:
    """The attribute sets of one call's points, and their keys (``_key``): the point of the
    tokentrail.* instruments, of the token counters (no error.type), and of the upstream ones
    (with gen_ai.token.type for gen_ai.client.token.usage)."""

    __slots__ = ("point", "key", "tokens", "tokens_key", "up", "up_key", "typed")

    def __init__(self, attributes: Mapping[str, Any], resource_attributes: Mapping[str, Any] | None) -> None:
        self.point = point = metric_attributes(attributes, resource_attributes)
        self.key = _key(point)
        self.tokens, self.tokens_key = point, self.key
        if attr.ERROR_TYPE in point:
            self.tokens = {k: v for k, v in point.items() if k not in _NOT_ON_TOKENS}
            self.tokens_key = _key(self.tokens)
        # The upstream GenAI histograms carry the upstream dimensions only (owner breakdowns are
        # what tokentrail.* are for), which also keeps their cost per point down.
        self.up = up = {k: point[k] for k in _UPSTREAM if k in point}
        if attr.SERVER_ADDRESS in attributes:
            for key in _SERVER:
                value = attributes.get(key)
                if value is not None:
                    up[key] = value
        self.up_key = _key(up)
        self.typed = {}
        for token_type in ("input", "output"):
            typed = {**up, attr.GEN_AI_TOKEN_TYPE: token_type}
            self.typed[token_type] = (typed, _key(typed))


#: The span attributes a call's points are made of: the same values give the same points.
_SIGNATURE = (*ALLOWED_ATTRIBUTES, attr.GEN_AI_SYSTEM, attr.SERVER_ADDRESS, attr.SERVER_PORT)
_points: BoundedMemo[tuple, _Points] = BoundedMemo(4096)


def _points_of(attributes: Mapping[str, Any], resource_attributes: Mapping[str, Any] | None) -> _Points:
    """A call's _Points, made once per signature (the allowlisted values, the server and the
    resource's environment). A span never stamped by AttributionSpanProcessor is made anew:
    its TOKENTRAIL_ATTRIBUTES defaults are read from the environment."""
    if attr.TOKENTRAIL_ATTRIBUTED not in attributes:
        return _Points(attributes, resource_attributes)
    # a None value counts as missing, here and in metric_attributes
    signature = (resource_attributes.get(attr.DEPLOYMENT_ENVIRONMENT_NAME) if resource_attributes else None,
                 *map(attributes.get, _SIGNATURE))
    try:
        return _points.get(signature, _signed_points)
    except TypeError:  # an unhashable value (a list): the SDK makes it a tuple
        return _Points(attributes, resource_attributes)


def _signed_points(signature: tuple) -> _Points:
    """The _Points of a signature: it holds every value they are made of."""
    environment, *values = signature
    return _Points({k: v for k, v in zip(_SIGNATURE, values) if v is not None},
                   None if environment is None else {attr.DEPLOYMENT_ENVIRONMENT_NAME: environment})


def _record_cost(inst: Instruments, attributes: Mapping[str, Any], points: _Points, context: Context) -> None:
    status = attributes.get(attr.TOKENTRAIL_COST_STATUS)
    point = points.point
    if status == "unpriced":
        inst.unpriced.add(1, point, context=_as_context(context))
        return
    usd = cost_usd(attributes) if status == "priced" else None
    if usd is None:
        return
    key = points.key
    inst.cost.record(usd, point, context, key)
    attempt = attributes.get(attr.TOKENTRAIL_RETRY_ATTEMPT)
    if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt > 0:
        inst.retries.add(usd, point, NO_EXEMPLAR, key)
    if attributes.get(attr.TOKENTRAIL_FALLBACK_FROM):
        inst.fallbacks.add(usd, point, NO_EXEMPLAR, key)
    saved = attributes.get(attr.TOKENTRAIL_COST_CACHE_SAVINGS)
    if isinstance(saved, float) and _plausible_usd(saved):
        inst.cache_savings.add(saved, point, NO_EXEMPLAR, key)


def _record_tokens(inst: Instruments, usage: Usage, points: _Points) -> None:
    by_type = (
        ("input", usage.uncached_input_tokens),
        ("cache_read", usage.cache_read_tokens),
        ("cache_write", usage.cache_write_tokens),
        ("output", usage.output_tokens),
        ("reasoning", usage.reasoning_tokens),
    )
    recorded = [(token_type, count) for token_type, count in by_type if count or token_type in ("input", "output")]
    inst.tokens.add_each(points.tokens, attr.TOKENTRAIL_TOKEN_TYPE, recorded, points.tokens_key)


def _record_upstream(inst: Instruments, usage: Usage | None, duration_s: float | None, points: _Points,
                     context: Context) -> None:
    up, key = points.up, points.up_key
    if inst.latest:
        _record_latest(inst, usage, duration_s, up, key, context)
        return
    if usage is not None:
        for token_type, count in (("input", usage.input_tokens), ("output", usage.output_tokens)):
            typed, typed_key = points.typed[token_type]
            inst.token_usage.record(count, typed, NO_EXEMPLAR, typed_key)
    if duration_s is not None:
        inst.duration.record(duration_s, up, context, key)


def _record_latest(inst: Instruments, usage: Usage | None, duration_s: float | None, up: Mapping[str, Any], key: Any,
                   context: Context) -> None:
    if up.get(attr.GEN_AI_OPERATION_NAME) == _EMBEDDINGS:
        if usage is not None:
            inst.embeddings_input.record(usage.input_tokens, up, NO_EXEMPLAR, key)
        if duration_s is not None:
            inst.embeddings_duration.record(duration_s, up, context, key)
        return
    if usage is not None:
        inst.inference_input.record(usage.input_tokens, up, NO_EXEMPLAR, key)
        inst.inference_output.record(usage.output_tokens, up, NO_EXEMPLAR, key)
    if duration_s is not None:
        inst.inference_duration.record(duration_s, up, context, key)
