"""tokentrail's own sums (processor/metrics.py, Histogram and Sum) against the SDK's own
synchronous histogram and counter: the same measurements and collections on two MeterProviders
must give the same data points (bucket counts, sum to the bit, min, max, attribute sets, overflow,
temporality, exemplar values and the spans they link), whatever views, readers and exemplar
filter the provider has. Also: nothing lost or counted twice while readers collect on other
threads, and every SDK internal the path reads, pinned (processor/sdk.py).
"""

from __future__ import annotations

import threading
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import Counter as SdkCounter
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal.exemplar import (AlwaysOffExemplarFilter, AlwaysOnExemplarFilter,
                                                          SimpleFixedSizeExemplarReservoir)
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.trace import TracerProvider

from tokentrail.processor import sdk
from tokentrail.processor.metrics import COST_BUCKETS_USD, NO_EXEMPLAR, Histogram, Sum, _summed_for

TRACER = TracerProvider(shutdown_on_exit=False).get_tracer("test")
SPANS = [TRACER.start_span(f"call {i}") for i in range(3)]
CONTEXTS = [trace.set_span_in_context(span, Context()) for span in SPANS] + [NO_EXEMPLAR]
# what CostSpanProcessor passes: an ended span's SpanContext (the SDK's own histogram gets its Context)
OURS = [*CONTEXTS, SPANS[2].get_span_context()]
THEIRS = [*CONTEXTS, trace.set_span_in_context(trace.NonRecordingSpan(SPANS[2].get_span_context()), Context())]
OWNERS = [{"tokentrail.tenant": t, "gen_ai.request.model": "gpt-4o"} for t in ("acme", "globex", "initech", "umbrella")]
DELTA = AggregationTemporality.DELTA


def _providers(reader_kwargs: dict, views: list[View], **provider_kwargs) -> tuple[Any, Any, Any, Any]:
    """(our Histogram, its reader, the SDK's own histogram, its reader) on two like providers."""
    ours_reader, sdk_reader = InMemoryMetricReader(**reader_kwargs), InMemoryMetricReader(**reader_kwargs)
    ours_provider = MeterProvider(metric_readers=[ours_reader], views=views, shutdown_on_exit=False, **provider_kwargs)
    sdk_provider = MeterProvider(metric_readers=[sdk_reader], views=views, shutdown_on_exit=False, **provider_kwargs)
    make = dict(name="tokentrail.cost", unit="USD", explicit_bucket_boundaries_advisory=COST_BUCKETS_USD)
    meter = ours_provider.get_meter("tokentrail")
    ours = _summed_for(ours_provider, meter)(meter.create_histogram(**make))
    assert isinstance(ours, Histogram)
    return ours, ours_reader, sdk_provider.get_meter("tokentrail").create_histogram(**make), sdk_reader


def _collected(reader) -> Any:
    """``_points(reader)``, or the error the SDK's collection raised: its exponential histogram
    fails on some extreme values ("Incorrect merge scale", its own bug), and ours must fail alike."""
    try:
        return _points(reader)
    except Exception as exc:  # noqa: BLE001
        return ("collection failed", type(exc).__name__, str(exc))


def _points(reader) -> list[tuple]:
    data = reader.get_metrics_data()
    out = []
    for resource in (data.resource_metrics if data else ()):
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "tokentrail.cost":
                    continue
                for p in metric.data.data_points:
                    exemplars = tuple(sorted(((e.trace_id, e.span_id, e.value, tuple(sorted(e.filtered_attributes.items())))
                                              for e in p.exemplars), key=repr))
                    if hasattr(p, "value"):  # a counter's
                        out.append((metric.name, metric.data.aggregation_temporality, metric.data.is_monotonic,
                                    tuple(sorted(p.attributes.items())), p.value, type(p.value), exemplars))
                        continue
                    fields = [tuple(sorted(p.attributes.items())), p.count, p.sum, type(p.sum), exemplars]
                    if hasattr(p, "bucket_counts"):  # explicit buckets; exponential ones below
                        fields += [p.bucket_counts, p.explicit_bounds, p.min, p.max]
                    else:
                        fields += [p.scale, p.zero_count, tuple(p.positive.bucket_counts), p.min, p.max]
                    out.append((metric.name, metric.data.aggregation_temporality, *fields))
    return sorted(out, key=repr)


values = st.one_of(st.integers(min_value=0, max_value=10**7),
                   st.floats(min_value=0, max_value=60, allow_nan=False, allow_infinity=False),
                   st.sampled_from([0.0001, 0.0005, 0.01155, 0.0020625, 50.0, -1.0, float("nan"), float("inf")]))
steps = st.lists(st.one_of(st.tuples(st.just("record"), values, st.integers(0, len(OWNERS) - 1),
                                     st.integers(0, len(OURS) - 1)),
                           st.just(("collect",))), max_size=40)
setups = st.sampled_from(["plain", "delta", "limit-2", "attribute-keys", "exponential-view",
                          "exponential-reader", "other-reservoir", "always-on"])


def _setup(name: str) -> tuple[dict, list[View], dict]:
    if name == "delta":
        return {"preferred_temporality": {SdkHistogram: DELTA}}, [], {}
    if name == "limit-2":
        return {}, [View(instrument_name="tokentrail.cost", aggregation_cardinality_limit=2)], {}
    if name == "attribute-keys":
        return {}, [View(instrument_name="tokentrail.cost", attribute_keys={"gen_ai.request.model"})], {}
    if name == "exponential-view":
        return {}, [View(instrument_name="tokentrail.cost", aggregation=ExponentialBucketHistogramAggregation())], {}
    if name == "exponential-reader":
        return {"preferred_aggregation": {SdkHistogram: ExponentialBucketHistogramAggregation()}}, [], {}
    if name == "other-reservoir":
        return {}, [View(instrument_name="tokentrail.cost", exemplar_reservoir_factory=lambda _: (
            lambda **kw: SimpleFixedSizeExemplarReservoir(size=1)))], {}
    if name == "always-on":
        return {}, [], {"exemplar_filter": AlwaysOnExemplarFilter()}
    return {}, [], {}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup=setups, script=steps)
def test_a_reader_sees_what_the_sdks_own_histogram_gives_it(setup, script):
    reader_kwargs, views, provider_kwargs = _setup(setup)
    ours, ours_reader, theirs, sdk_reader = _providers(reader_kwargs, views, **provider_kwargs)
    for step in [*script, ("collect",)]:
        if step[0] == "collect":
            got, want = _collected(ours_reader), _collected(sdk_reader)
            if setup == "other-reservoir":  # a random reservoir: compare all but the exemplars
                got, want = ([p[:6] + p[7:] for p in points] for points in (got, want))
            assert got == want
            continue
        _, value, owner, context = step
        ours.record(value, dict(OWNERS[owner]), context=OURS[context])
        theirs.record(value, dict(OWNERS[owner]), context=THEIRS[context])
    if setup in ("exponential-view", "exponential-reader", "other-reservoir"):
        assert ours._sync or not ours._series  # left to the SDK's own record


counter_setups = st.sampled_from(["plain", "delta", "limit-2", "attribute-keys", "always-on", "always-off"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup=counter_setups, script=steps)
def test_a_reader_sees_what_the_sdks_own_counter_gives_it(setup, script):
    reader_kwargs, views, provider_kwargs = _setup(setup)
    if setup == "delta":
        reader_kwargs = {"preferred_temporality": {SdkCounter: DELTA}}
    if setup == "always-off":
        provider_kwargs = {"exemplar_filter": AlwaysOffExemplarFilter()}
    readers = [InMemoryMetricReader(**reader_kwargs) for _ in range(2)]
    providers = [MeterProvider(metric_readers=[r], views=views, shutdown_on_exit=False, **provider_kwargs)
                 for r in readers]
    meters = [p.get_meter("tokentrail") for p in providers]
    ours = _summed_for(providers[0], meters[0])(meters[0].create_counter("tokentrail.cost"))
    theirs = meters[1].create_counter("tokentrail.cost")
    assert isinstance(ours, Sum)
    for step in [*script, ("collect",)]:
        if step[0] == "collect":
            got, want = _points(readers[0]), _points(readers[1])
            if setup == "always-on":  # left to the SDK, whose counter reservoir samples at random
                assert ours._sync
                got, want = ([p[:-1] for p in points] for points in (got, want))
            assert got == want
            continue
        _, value, owner, _ = step
        # tokentrail adds its counters outside any span (a sampled context goes to the SDK)
        ours.add(value, dict(OWNERS[owner]), context=NO_EXEMPLAR)
        theirs.add(value, dict(OWNERS[owner]), context=NO_EXEMPLAR)


def test_a_counter_measurement_in_a_sampled_span_is_the_sdks():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    meter = provider.get_meter("tokentrail")
    ours = _summed_for(provider, meter)(meter.create_counter("tokentrail.cost"))
    ours.add(2, OWNERS[0], context=CONTEXTS[0])
    assert not ours._series  # not summed here: the SDK samples its exemplar
    ours.add(3, OWNERS[0], context=NO_EXEMPLAR)
    [point] = _raw_points(reader)
    assert point.value == 5 and [e.span_id for e in point.exemplars] == [SPANS[0].get_span_context().span_id]


def test_a_series_point_starts_before_its_first_measurement():
    ours, reader, _, _ = _providers({}, [])
    before = __import__("time").time_ns()
    ours.record(0.5, {"tokentrail.tenant": "acme"})
    [point] = [p for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics if m.name == "tokentrail.cost" for p in m.data.data_points]
    assert before <= point.start_time_unix_nano <= point.time_unix_nano and point.count == 1


def test_nothing_is_lost_or_counted_twice_while_readers_collect():
    ours, reader, _, _ = _providers({"preferred_temporality": {SdkHistogram: DELTA}}, [])
    threads, per_thread = 4, 2_000
    seen: list[tuple[int, float]] = []
    done = threading.Event()

    def collect() -> None:
        while not done.is_set():
            seen.extend((p.count, p.sum) for p in _raw_points(reader))

    def record(i: int) -> None:
        for n in range(per_thread):
            ours.record(1, OWNERS[(i + n) % len(OWNERS)])

    collector = threading.Thread(target=collect)
    collector.start()
    workers = [threading.Thread(target=record, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    collector.join()
    seen.extend((p.count, p.sum) for p in _raw_points(reader))
    assert sum(count for count, _ in seen) == sum(total for _, total in seen) == threads * per_thread


def _raw_points(reader) -> list[Any]:
    data = reader.get_metrics_data()
    return [p for rm in (data.resource_metrics if data else ()) for sm in rm.scope_metrics for m in sm.metrics
            if m.name == "tokentrail.cost" for p in m.data.data_points]


def test_series_stay_bounded_past_the_cap_and_lose_nothing():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    meter = provider.get_meter("tokentrail")
    ours = Histogram(meter.create_histogram("tokentrail.cost", unit="USD"), sdk.measurement_consumer(provider),
                     sdk.exemplar_filter(provider), cap=3)
    for i in range(10):
        ours.record(1, {"tokentrail.tenant": f"t{i}"})
    assert len(ours._series) == 4  # three sets and the overflow series
    ours.flush()  # built here without the provider's collection callback
    points = {tuple(p.attributes.items()): p.count for p in _raw_points(reader)}
    assert points[(("otel.metric.overflow", True),)] == 7 and sum(points.values()) == 10


def test_other_meter_providers_keep_the_sdk_instrument():
    from opentelemetry.metrics import NoOpMeterProvider

    provider = NoOpMeterProvider()
    instrument = provider.get_meter("tokentrail").create_histogram("tokentrail.cost")
    plain = _summed_for(provider, provider.get_meter("tokentrail"))(instrument)
    assert not isinstance(plain, Histogram) and plain._instrument is instrument


# --- the SDK internals the path reads, pinned against the installed SDK -----------------------
def test_the_sdk_internals_of_the_histogram_path_hold():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    consumer = sdk.measurement_consumer(provider)
    assert consumer is not None and sdk.measurement_consumer(object()) is None
    lock = sdk.collection_lock(consumer)
    assert lock.acquire(blocking=False)
    lock.release()
    should_sample = sdk.exemplar_filter(provider).should_sample
    assert should_sample(1, 0, {}, CONTEXTS[0]) is True and should_sample(1, 0, {}, NO_EXEMPLAR) is False
    instrument = provider.get_meter("m").create_histogram("h", explicit_bucket_boundaries_advisory=(1.0, 10.0))
    assert sdk.instrument_enabled(instrument)() is True
    assert sdk.clean_attributes({"a": ["x", "y"]}) == {"a": ("x", "y")}
    targets = sdk.aggregation_targets(consumer, instrument, {"a": "x"})
    assert sdk.targets_current(consumer, targets)
    [aggregation], overflowed = sdk.aggregations(targets, sdk.HISTOGRAM)
    assert not overflowed
    assert sdk.aggregations(targets, sdk.HISTOGRAM) == ([aggregation], False)  # found again
    provider.add_metric_reader(InMemoryMetricReader())
    assert not sdk.targets_current(consumer, targets)
    assert len(sdk.aggregations(sdk.aggregation_targets(consumer, instrument, {"a": "x"}), sdk.HISTOGRAM)[0]) == 2
    merged = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False, views=[
        View(instrument_name="h", attribute_keys={"b"})])
    assert sdk.aggregation_targets(sdk.measurement_consumer(merged), merged.get_meter("m").create_histogram("h"),
                                 {"a": "x"}) is sdk.UNSUMMABLE
    assert sdk.histogram_bounds(aggregation) == (1.0, 10.0)
    sdk.add_to_histogram(aggregation, [1, 0, 2], 25.5, 0.5, 20)
    sdk.offer_exemplar(aggregation, 20, 123, {"a": "x"}, CONTEXTS[1])
    [point] = [p for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics for p in m.data.data_points]
    assert (point.count, point.sum, point.min, point.max, point.bucket_counts) == (3, 25.5, 0.5, 20, (1, 0, 2))
    [exemplar] = point.exemplars
    assert (exemplar.value, exemplar.time_unix_nano, exemplar.span_id) == (20, 123, SPANS[1].get_span_context().span_id)
    exponential = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False, views=[
        View(instrument_name="h", aggregation=ExponentialBucketHistogramAggregation())])
    other = exponential.get_meter("m").create_histogram("h")
    targets_of = lambda provider, instrument, attributes: sdk.aggregation_targets(  # noqa: E731
        sdk.measurement_consumer(provider), instrument, attributes)
    assert sdk.aggregations(targets_of(exponential, other, {}), sdk.HISTOGRAM) is sdk.UNSUMMABLE
    limited = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False, views=[
        View(instrument_name="h", aggregation_cardinality_limit=1)])
    third = limited.get_meter("m").create_histogram("h")
    assert sdk.aggregations(targets_of(limited, third, {"a": "x"}), sdk.HISTOGRAM)[1] is False
    [overflow], overflowed = sdk.aggregations(targets_of(limited, third, {"a": "y"}), sdk.HISTOGRAM)
    assert overflowed and overflow._attributes == {"otel.metric.overflow": True}


def test_a_calls_points_follow_its_attributes_through_the_memo(monkeypatch):
    """_points_of keeps the point attribute sets per signature: the same allowlisted values and
    server give the same sets, any difference (the server port, the environment) others, and a
    span never stamped reads the TOKENTRAIL_ATTRIBUTES defaults anew each time."""
    from tokentrail.processor.metrics import _points_of

    call = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o", "gen_ai.operation.name": "chat",
            "tokentrail.tenant": "acme", "tokentrail.attributed": True, "server.address": "api.example",
            "server.port": 443, "gen_ai.response.id": "one"}
    first = _points_of(call, {})
    assert _points_of({**call, "gen_ai.response.id": "two"}, {}) is first
    other_port = _points_of({**call, "server.port": 8443}, {})
    assert other_port.point == first.point and other_port.up["server.port"] == 8443
    prod = _points_of(call, {"deployment.environment.name": "prod"})
    assert prod.point["deployment.environment.name"] == "prod" and "deployment.environment.name" not in first.point
    unstamped = {k: v for k, v in call.items() if k not in ("tokentrail.attributed", "tokentrail.tenant")}
    monkeypatch.setenv("TOKENTRAIL_ATTRIBUTES", "team=support")
    assert _points_of(unstamped, {}).point["tokentrail.team"] == "support"
    monkeypatch.setenv("TOKENTRAIL_ATTRIBUTES", "team=search")
    assert _points_of(unstamped, {}).point["tokentrail.team"] == "search"
