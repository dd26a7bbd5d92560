"""Cost and token metrics: instruments, SDK views (buckets, attribute allowlist, cardinality
limit) and ``record_llm_call``, the one function that turns a finished LLM call into points.

Metric attributes are an allowlist enforced twice: ``metric_attributes`` only copies allowed
keys, and the SDK ``View``s (``metric_views``) keep only those keys and cap each stream with
the SDK's aggregation cardinality limit, so one noisy dimension cannot explode a backend.

The token and USD counters are ``Totals``: tokentrail's own sums per attribute set, reported
through ObservableCounters when a reader collects (a dict update per call instead of a full SDK
measurement). The histograms are ``Histogram``: bucket counts, sums and exemplars summed by
tokentrail per attribute set and added to the SDK's own aggregations as a reader collects.
"""

from __future__ import annotations

import logging
import itertools
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
from opentelemetry.sdk.metrics import TraceBasedExemplarFilter
from opentelemetry.sdk.metrics.export import AggregationTemporality
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from tokentrail import config
from tokentrail.processor import sdk
from tokentrail.processor.sdk import NO_EXEMPLAR, counter_temporalities
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


class Totals:
    """A monotonic counter summed by tokentrail per attribute set and handed to the SDK by an
    ObservableCounter callback when a reader collects (cumulative totals: the reader sees what
    a synchronous counter would report). ``add`` has ``Counter.add``'s signature.

    The SDK still applies the views and the cardinality limit to what it is handed; attribute
    sets come in the order they were first seen, as a synchronous counter meets them, so the
    same sets get a series of their own and the rest land in the SDK's overflow series. Past
    ``cap`` sets (never below the SDK's limit) new ones are summed here as that overflow series,
    so the memory stays bounded.
    """

    __slots__ = ("_sums", "_lock", "_cap")

    def __init__(self, cap: int) -> None:
        self._sums: dict[Any, list] = {}  # key -> [attributes, total]
        self._lock = threading.Lock()
        self._cap = cap

    def add(self, amount: int | float, attributes: Mapping[str, Any], context: Any = None, key: Any = None) -> None:
        if key is None:
            key = _key(attributes)
        with self._lock:
            self._add(key, amount, attributes)

    def add_each(self, attributes: Mapping[str, Any], name: str, amounts: Iterable[tuple[Any, int | float]]) -> None:
        """``add(amount, {**attributes, name: value})`` for each (value, amount): the attribute
        set is hashed once and the lock taken once (the token types of one call)."""
        base = _key(attributes)
        with self._lock:
            for value, amount in amounts:
                self._add((base, value), amount, attributes, name, value)

    def _add(self, key: Any, amount: int | float, attributes: Mapping[str, Any], name: str | None = None,
             value: Any = None) -> None:
        """With the lock held: add to the set's total, or start it (``attributes`` plus
        ``name: value``, copied: callers reuse their dict), or past the cap add to the overflow."""
        found = self._sums.get(key)
        if found is None:
            if len(self._sums) < self._cap:
                started = dict(attributes)
                if name is not None:
                    started[name] = value
                self._sums[key] = [started, amount]
                return
            found = self._sums.get(_OVERFLOW_KEY)
            if found is None:
                self._sums[_OVERFLOW_KEY] = [dict(_OVERFLOW), amount]
                return
        found[1] += amount

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            found = [(attributes, total) for attributes, total in self._sums.values()]
        # NO_EXEMPLAR: a collection inside a request span must not sample it as an exemplar
        return [Observation(total, attributes, NO_EXEMPLAR) for attributes, total in found]


def _key(attributes: Mapping[str, Any]) -> Any:
    try:
        return frozenset(attributes.items())
    except TypeError:  # a list value (the SDK turns it into a tuple)
        return frozenset((k, tuple(v) if isinstance(v, list) else v) for k, v in attributes.items())


_OVERFLOW_KEY = _key(_OVERFLOW)


class Histogram:
    """An SDK histogram whose measurements tokentrail sums itself, per attribute set: bucket
    counts, sum, min, max and the exemplar offers, added to the SDK's own aggregations when a
    reader collects (``flush``, called back by the provider's collection). ``record`` has
    ``Histogram.record``'s signature and costs a dict update instead of a full SDK measurement.

    The SDK creates each series itself (views, cardinality limit and overflow, start time) when
    its first measurement comes, under the provider's collection lock, so no collection sees a
    series without it. Each SDK series gets the sum of its own measurements in their order, so
    a reader gets the same float sums. Anything the SDK would aggregate otherwise goes to its own
    ``record``: a value it refuses (negative, not finite), a disabled meter, another aggregation
    or exemplar reservoir, a view that merges attribute sets.
    """

    __slots__ = ("_instrument", "_consumer", "_lock", "_collecting", "_sample", "_enabled", "_series",
                 "_bounds", "_cap", "_sync", "_order")

    def __init__(self, instrument: Any, consumer: Any, sample: Any, cap: int) -> None:
        self._instrument = instrument
        self._consumer = consumer  # the SDK's measurement consumer: no reference to the provider
        self._lock = threading.Lock()
        self._collecting = sdk.collection_lock(consumer)
        self._enabled = sdk.instrument_enabled(instrument)
        self._series: dict[Any, _Series] = {}
        self._bounds: tuple[float, ...] = ()
        self._cap = cap
        self._sync = self._enabled is None or sample is None
        if isinstance(sample, TraceBasedExemplarFilter):
            self._sample = None  # its answer depends on the context only: _in_sampled_span
        else:
            self._sample = sample.should_sample if sample is not None else None
        self._order = itertools.count()  # exemplar offers, in the order they were made

    def record(self, amount: int | float, attributes: Mapping[str, Any] | None = None, context: Any = None,
               key: Any = None) -> None:
        """``key``: ``_key(attributes)``, when the caller has it."""
        # ``not 0 <= amount < inf`` is also true of nan: the SDK warns and drops such values
        if self._sync or not 0 <= amount < math.inf or not self._enabled():
            self._instrument.record(amount, attributes, context=context)
            return
        if attributes is None:
            attributes = {}
        if context is None:
            context = context_api.get_current()
        if self._sample is None:  # the SDK's default, trace-based filter
            now = 0
            order = None
            if _in_sampled_span(context):
                now, order = time_ns(), next(self._order)
        else:
            now = time_ns()
            order = next(self._order) if self._sample(amount, now, attributes, context) else None
        if key is None:
            key = _key(attributes)
        with self._lock:
            series = self._series.get(key)
            if series is not None:
                series.add(amount, bisect_left(self._bounds, amount), context, now, order, attributes)
                return
        self._open(key, amount, attributes, context, now, order)

    def _open(self, key: Any, amount: int | float, attributes: Mapping[str, Any], context: Any, now: int,
              order: int | None) -> None:
        with self._collecting, self._lock:
            series = self._series.get(key)
            if series is None and not self._sync:
                series = self._start(key, attributes)
            if series is not None:
                series.add(amount, bisect_left(self._bounds, amount), context, now, order, attributes)
                return
        self._instrument.record(amount, attributes, context=context)

    def _start(self, key: Any, attributes: Mapping[str, Any]) -> "_Series | None":
        """With both locks held: the series of a new attribute set, created in the SDK; None to
        leave it to the SDK's own ``record`` (no reader yet, or not summable here)."""
        cleaned = sdk.clean_attributes(attributes)
        found = targets = None
        if len(self._series) < self._cap:
            targets = sdk.histogram_targets(self._consumer, self._instrument, cleaned)
            found = sdk.UNSUMMABLE if targets is sdk.UNSUMMABLE else sdk.histogram_aggregations(targets)
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
             overflow: bool = False) -> "_Series | None":
        if targets is None:
            targets = sdk.histogram_targets(self._consumer, self._instrument, attributes)
            found = sdk.UNSUMMABLE if targets is sdk.UNSUMMABLE else sdk.histogram_aggregations(targets)
        if found is sdk.UNSUMMABLE:
            self._sync = True
            return None
        aggregations, _ = found
        bounds = {sdk.histogram_bounds(aggregation) for aggregation in aggregations}
        if len(bounds) != 1 or (self._bounds and bounds != {self._bounds}):
            self._sync = bool(bounds)  # no reader yet: the SDK drops it too
            return None
        self._bounds = bounds.pop()
        series = self._series[key] = _Series(attributes, targets, len(self._bounds) + 1, overflow, self._sample is None)
        return series

    def flush(self) -> None:
        """Add what was recorded since the last flush to the SDK's aggregations (every reader's)."""
        with self._lock:
            due = [(series, series.take()) for series in dict.fromkeys(self._series.values()) if series.count]
        offers = []
        for series, (counts, total, low, high, exemplars) in due:
            targets = series.targets
            if not sdk.targets_current(self._consumer, targets):  # readers added or removed since
                targets = series.targets = sdk.histogram_targets(self._consumer, self._instrument, series.attributes)
            found = sdk.UNSUMMABLE if targets is sdk.UNSUMMABLE else sdk.histogram_aggregations(targets)
            if found is sdk.UNSUMMABLE:  # a reader added since, with another aggregation
                self._sync = True
                _logger.warning("tokentrail: %s changed aggregation; its points since the last collection "
                                "are lost, later ones are recorded by the SDK", self._instrument.name)
                continue
            for aggregation in found[0]:
                sdk.add_to_histogram(aggregation, counts, total, low, high)
                offers.extend((offer, aggregation) for offer in exemplars)
        # in the order made, as the SDK's reservoirs met them
        offers.sort(key=_first_of_first)
        for (_, *offer), aggregation in offers:
            sdk.offer_exemplar(aggregation, *offer)


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


def _first_of_first(item: tuple) -> Any:
    return item[0][0]


class _Series:
    """One SDK series of a Histogram, since the last flush."""

    __slots__ = ("attributes", "targets", "size", "overflow", "traced", "counts", "sum", "min", "max", "count",
                 "exemplars")

    def __init__(self, attributes: Mapping[str, Any], targets: Any, size: int, overflow: bool, traced: bool) -> None:
        self.attributes = attributes
        self.targets = targets  # where the SDK takes them: found once (sdk.histogram_targets)
        self.size = size
        self.overflow = overflow  # many attribute sets: each exemplar keeps its own
        self.traced = traced  # offers only from sampled spans (the trace-based filter)
        self._reset()

    def _reset(self) -> None:
        self.counts = [0] * self.size
        self.sum: int | float = 0  # as the SDK sums: exact ints stay ints
        self.min: int | float = math.inf
        self.max: int | float = -math.inf
        self.count = 0
        self.exemplars: dict[int, tuple] = {}

    def add(self, amount: int | float, bucket: int, context: Any, now: int, order: int | None,
            attributes: Mapping[str, Any]) -> None:
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


#: The counters (Instruments attribute, name, unit, description): Totals where they can be.
_COUNTERS = (
    ("tokens", names.TOKENTRAIL_TOKENS, "{token}", "Tokens by tokentrail.token.type"),
    # The share of spend that was retries, fallbacks and cache savings (dashboards), without
    # the retry attempt or fallback model as metric labels.
    ("retries", names.TOKENTRAIL_COST_RETRIES, "USD", "USD of LLM calls that were retries"),
    ("fallbacks", names.TOKENTRAIL_COST_FALLBACKS, "USD", "USD of fallback LLM calls"),
    ("cache_savings", names.TOKENTRAIL_CACHE_SAVINGS, "USD", "USD saved by prompt-cache reads"),
)


def _observed_counters(meter: metrics_api.Meter) -> dict[str, Totals]:
    cap = max(config.cardinality_limit(), _SDK_DEFAULT_CARDINALITY_LIMIT)
    return {key: _observed(meter, cap, name, unit, description) for key, name, unit, description in _COUNTERS}


def _sync_counters(meter: metrics_api.Meter) -> dict[str, Any]:
    """The same counters as synchronous SDK instruments (delta readers, other providers)."""
    return {key: _Plain(meter.create_counter(name, unit=unit, description=description))
            for key, name, unit, description in _COUNTERS}


class _Plain:
    """An instrument of the API as such, with the ``key`` argument of Histogram and Totals."""

    __slots__ = ("_instrument",)

    def __init__(self, instrument: Any) -> None:
        self._instrument = instrument

    def record(self, amount: int | float, attributes: Mapping[str, Any] | None = None, context: Any = None,
               key: Any = None) -> None:
        self._instrument.record(amount, attributes, context=context)

    def add(self, amount: int | float, attributes: Mapping[str, Any] | None = None, context: Any = None,
            key: Any = None) -> None:
        self._instrument.add(amount, attributes, context=context)


def _observed(meter: metrics_api.Meter, cap: int, name: str, unit: str, description: str) -> Totals:
    totals = Totals(cap)
    meter.create_observable_counter(name, callbacks=[totals.observe], unit=unit, description=description)
    return totals


# By MeterProvider, for as long as it lives; not forgotten by tokentrail.state.reset(): its
# ObservableCounters keep reporting these totals (a second registration would double them).
# False: the provider keeps synchronous counters.
_counters: "weakref.WeakKeyDictionary[Any, dict[str, Totals] | bool]" = weakref.WeakKeyDictionary()
_counters_lock = threading.Lock()


def _counters_for(meter_provider: Any, meter: metrics_api.Meter) -> dict[str, Totals] | None:
    """The provider's Totals, when every reader of it collects cumulative counters; None for a
    reader asking for delta (a synchronous counter reports only the series that changed, an
    observable one every series) and for a provider that is not the SDK's."""
    try:
        found = _counters.get(meter_provider)
    except TypeError:  # not weakly referenceable
        return None
    if found is None:
        with _counters_lock:
            found = _counters.get(meter_provider)
            if found is None:
                temporalities = counter_temporalities(meter_provider)
                eligible = temporalities is not None and all(
                    t is AggregationTemporality.CUMULATIVE for t in temporalities)
                found = _counters[meter_provider] = _observed_counters(meter) if eligible else False
    return found or None


# By MeterProvider, for as long as it lives (not forgotten by tokentrail.state.reset(), like the
# counters): its Histograms by SDK instrument, flushed by one callback registered on it.
_histograms: "weakref.WeakKeyDictionary[Any, dict[Any, Histogram]]" = weakref.WeakKeyDictionary()


def _histograms_for(meter_provider: Any, meter: metrics_api.Meter) -> Any:
    """A function giving the Histogram of each SDK histogram of this provider (the instrument
    itself for a provider that is not the SDK's)."""
    consumer = sdk.measurement_consumer(meter_provider)
    sample = sdk.exemplar_filter(meter_provider)
    if consumer is None or sample is None:
        return _Plain
    try:
        book = _histograms.get(meter_provider)
    except TypeError:  # not weakly referenceable
        return _Plain
    if book is None:
        with _counters_lock:
            book = _histograms.get(meter_provider)
            if book is None:
                book = _histograms[meter_provider] = {}
                meter.create_observable_gauge(names.TOKENTRAIL_HISTOGRAMS_COLLECT, callbacks=[_flusher(book)],
                                              unit="1", description="Never reports a point")
    cap = max(config.cardinality_limit(), _SDK_DEFAULT_CARDINALITY_LIMIT)

    def summed(instrument: Any) -> Any:
        with _counters_lock:
            found = book.get(instrument)
            if found is None:
                found = book[instrument] = Histogram(instrument, consumer, sample, cap)
        return found
    return summed


def _flusher(book: dict[Any, Histogram]) -> Any:
    def flush(options: CallbackOptions) -> Iterable[Observation]:
        for histogram in tuple(book.values()):
            histogram.flush()
        return ()
    return flush


class Instruments:
    """The instruments of one MeterProvider."""

    __slots__ = ("cost", "tokens", "unpriced", "latest", "token_usage", "duration", "inference_duration",
                 "inference_input", "inference_output", "embeddings_duration", "embeddings_input", "retries",
                 "fallbacks", "cache_savings")

    def __init__(self, meter_provider: metrics_api.MeterProvider | None = None) -> None:
        meter = metrics_api.get_meter(METER_NAME, meter_provider=meter_provider)
        summed = _histograms_for(meter_provider, meter)
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
        counters: Any = _counters_for(meter_provider, meter) if meter_provider is not None else None
        if counters is None:
            counters = _sync_counters(meter)
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
    out = {k: attributes[k] for k in ALLOWED_ATTRIBUTES if k in attributes}
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
    context: Context | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    upstream: bool = True,
) -> None:
    """Record the metric points of one finished LLM call from its (priced) span attributes.

    Used by CostSpanProcessor for every LLM span, and by instrumentations only when no
    CostSpanProcessor will see their span (``tokentrail.processor.cost.pipeline_active()``).
    ``context`` carries the span so SDK exemplars link the trace (defaults to the current
    context). ``upstream=False`` skips the gen_ai.client.* histograms, for foreign spans whose
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
    point = metric_attributes(attributes, resource_attributes)
    if context is None:
        context = context_api.get_current()
    # Exemplars (trace links) on the points one drills down from: cost, unpriced calls and
    # duration. The other points take none: the SDK's exemplar reservoir is a large part of
    # each measurement's cost, and the cost point of the same call already links it.
    _record_cost(inst, attributes, point, context)
    try:
        usage = Usage.from_attributes(attributes)
    except InvalidUsage:
        usage = None
    if usage is not None:
        _record_tokens(inst, usage, point)
    if upstream:
        _record_upstream(inst, attributes, usage, duration_s, point, context)


def _record_cost(inst: Instruments, attributes: Mapping[str, Any], point: dict[str, Any], context: Context) -> None:
    status = attributes.get(attr.TOKENTRAIL_COST_STATUS)
    if status == "unpriced":
        inst.unpriced.add(1, point, context=context)
        return
    usd = cost_usd(attributes) if status == "priced" else None
    if usd is None:
        return
    key = _key(point)  # one hash of the point for all its instruments
    inst.cost.record(usd, point, context, key)
    attempt = attributes.get(attr.TOKENTRAIL_RETRY_ATTEMPT)
    if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt > 0:
        inst.retries.add(usd, point, NO_EXEMPLAR, key)
    if attributes.get(attr.TOKENTRAIL_FALLBACK_FROM):
        inst.fallbacks.add(usd, point, NO_EXEMPLAR, key)
    saved = attributes.get(attr.TOKENTRAIL_COST_CACHE_SAVINGS)
    if isinstance(saved, float) and _plausible_usd(saved):
        inst.cache_savings.add(saved, point, NO_EXEMPLAR, key)


def _record_tokens(inst: Instruments, usage: Usage, point: Mapping[str, Any]) -> None:
    by_type = (
        ("input", usage.uncached_input_tokens),
        ("cache_read", usage.cache_read_tokens),
        ("cache_write", usage.cache_write_tokens),
        ("output", usage.output_tokens),
        ("reasoning", usage.reasoning_tokens),
    )
    tokens_point = {k: v for k, v in point.items() if k not in _NOT_ON_TOKENS}
    recorded = [(token_type, count) for token_type, count in by_type if count or token_type in ("input", "output")]
    type_key = attr.TOKENTRAIL_TOKEN_TYPE
    tokens = inst.tokens
    if isinstance(tokens, Totals):
        tokens.add_each(tokens_point, type_key, recorded)
        return
    # One dict for all token points: the SDK copies a point's attributes when it takes the
    # measurement, so changing the token type afterwards cannot touch a recorded point.
    for token_type, count in recorded:
        tokens_point[type_key] = token_type
        tokens.add(count, tokens_point, context=NO_EXEMPLAR)


def _record_upstream(inst: Instruments, attributes: Mapping[str, Any], usage: Usage | None,
                     duration_s: float | None, point: Mapping[str, Any], context: Context) -> None:
    # The upstream GenAI histograms carry the upstream dimensions only (owner breakdowns are
    # what tokentrail.* are for), which also keeps their per-measurement cost down.
    up = {k: point[k] for k in _UPSTREAM if k in point}
    if attr.SERVER_ADDRESS in attributes:
        for key in _SERVER:
            value = attributes.get(key)
            if value is not None:
                up[key] = value
    if inst.latest:
        _record_latest(inst, usage, duration_s, up, context)
        return
    if usage is not None:
        typed = dict(up)  # reused for both points (the SDK copies, see above); ``up`` stays clean
        typed[attr.GEN_AI_TOKEN_TYPE] = "input"
        inst.token_usage.record(usage.input_tokens, typed, context=NO_EXEMPLAR)
        typed[attr.GEN_AI_TOKEN_TYPE] = "output"
        inst.token_usage.record(usage.output_tokens, typed, context=NO_EXEMPLAR)
    if duration_s is not None:
        inst.duration.record(duration_s, up, context=context)


def _record_latest(inst: Instruments, usage: Usage | None, duration_s: float | None, up: Mapping[str, Any],
                   context: Context) -> None:
    key = _key(up)
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
